"""Deployment formats (ONNX, TFLite, OpenVINO), packages, and their verification.

This module is import-cheap (stdlib only: no numpy, torch, tensorflow or openvino): it holds the one
table of what each format supports, so the CLI can validate `--formats` / `--precision` without loading
any runtime, and a probe bundle can carry it to a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class FormatSpec:
    """What one format supports and where its file lives inside a package.

    `precisions` is the single source of truth for what `convert` accepts; `layout` is the input layout
    of the written file (TFLite graphs are built natively in NHWC); `runtime` is the engine that runs it.
    """

    name: str
    file_name: str  # main file, relative to the format's output folder
    extra_files: tuple[str, ...]  # files written next to the main file (OpenVINO weights)
    layout: str  # "NCHW" | "NHWC"
    runtime: str  # "onnxruntime" | "tflite" | "openvino"
    precisions: tuple[str, ...]
    notes: str

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise ValueError(
                f"precision: {precision!r} is not supported by format {self.name!r}; allowed: {list(self.precisions)}"
            )


FORMATS: dict[str, FormatSpec] = {
    "onnx": FormatSpec(
        name="onnx", file_name="model.onnx", extra_files=(), layout="NCHW", runtime="onnxruntime",
        precisions=PRECISIONS,
        notes="opset 17; fp16 = fp16 weights with a Cast to fp32 (CPU computes in fp32); "
              "int8 = ONNX Runtime static QDQ, per-channel 7-bit-range weights (no saturation without VNNI), "
              "calibrated",
    ),
    "tflite": FormatSpec(
        name="tflite", file_name="model.tflite", extra_files=(), layout="NHWC", runtime="tflite",
        precisions=PRECISIONS,
        notes="native NHWC TensorFlow mirror (tf ops), BN folded; fp16 = fp16 weights; int8 = full-integer ops with a "
              "representative dataset, float32 input/output tensors",
    ),
    "openvino": FormatSpec(
        name="openvino", file_name="openvino/model.xml", extra_files=("openvino/model.bin",), layout="NCHW",
        runtime="openvino", precisions=PRECISIONS,
        notes="IR v11; fp16 = compress_to_fp16 weights; int8 = nncf.quantize (calibrated, overflow fix); labels and "
              "preprocessing in rt_info",
    ),
}

# Derived from FORMATS, never written twice: main-file suffix -> format, runtime -> the format it loads.
FILE_SUFFIX_FORMAT: dict[str, str] = {PurePosixPath(spec.file_name).suffix: name for name, spec in FORMATS.items()}
RUNTIMES: dict[str, str] = dict(sorted((spec.runtime, name) for name, spec in FORMATS.items()))


def get_format(name: str) -> FormatSpec:
    """The spec of one format; ValueError naming the allowed formats (never a guess)."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"format: unknown {name!r}; allowed: {list(FORMATS)}") from None


def check_precision(precision: str) -> None:
    """ValueError naming the allowed precisions unless `precision` is one of them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown {precision!r}; allowed: {list(PRECISIONS)}")


def runtime_format(runtime: str) -> str:
    """The format a runtime loads; ValueError naming the allowed runtimes."""
    try:
        return RUNTIMES[runtime]
    except KeyError:
        raise ValueError(f"runtime: {runtime!r} is not allowed; allowed: {', '.join(RUNTIMES)}") from None


__all__ = ["FILE_SUFFIX_FORMAT", "FORMATS", "PRECISIONS", "RUNTIMES", "FormatSpec", "check_precision", "get_format",
           "runtime_format"]
