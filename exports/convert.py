"""One entry point for every format: `convert(model, fmt, precision, out_dir, ...)`.

Each format module exposes the same function, `export(model, precision, out_dir, *, spec)`, so this
module only validates the request (against the FORMATS table) and dispatches.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from exports import check_precision, get_format


@dataclass(frozen=True)
class ExportSpec:
    """What every exporter needs besides the model: input shape, calibration data, metadata.

    `calibration` is (N, C, r, r) float32, already normalised (what the model sees), NCHW. `onnx_fp32`:
    an fp32 ONNX export of this very model made earlier (`exports.onnx.export_fp32`), which the formats that
    start from one (ONNX, OpenVINO) use instead of exporting again.
    """

    resolution: int
    in_channels: int
    calibration: np.ndarray | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    onnx_fp32: Path | None = None

    @property
    def input_shape_nchw(self) -> tuple[int, int, int, int]:
        return (1, self.in_channels, self.resolution, self.resolution)


def input_channels(model: nn.Module) -> int:
    """Channels of the model's input: those of its first convolution (or linear layer)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
        if isinstance(m, nn.Linear):
            raise ValueError("model: starts with a Linear layer; exporters take image-like NCHW inputs")
    raise ValueError("model: has no Conv2d layer; cannot infer its input channels")


def _check_calibration(calibration: np.ndarray | None, precision: str, shape: tuple[int, ...]) -> None:
    if precision == "int8" and (calibration is None or len(calibration) == 0):
        raise ValueError("int8 needs calibration data: pass calibration= (N, C, r, r) float32 normalised images")
    if calibration is not None and tuple(calibration.shape[1:]) != shape[1:]:
        raise ValueError(f"calibration: shape {tuple(calibration.shape)} does not match the model input "
                         f"(N, {shape[1]}, {shape[2]}, {shape[3]})")


def convert(
    model: nn.Module,
    fmt: str,
    precision: str,
    out_dir: Path,
    *,
    resolution: int,
    calibration: np.ndarray | None = None,
    metadata: dict[str, Any] | None = None,
    onnx_fp32: Path | None = None,
) -> Path:
    """Write `model` (eval mode, NCHW input (1, C, r, r)) in `fmt` at `precision` under `out_dir`.

    `model` may be any composition of `supernets.static` modules (StaticNet, ConvBNAct, MBConv, Head,
    nn.Sequential of them). Returns the main file written (model.onnx, model.tflite, openvino/model.xml).
    `onnx_fp32`: see ExportSpec.
    """
    spec_fmt = get_format(fmt)
    check_precision(precision)
    spec_fmt.check_precision(precision)
    if model.training:
        raise ValueError("model: is in training mode; call .eval() first (BN must use its running statistics)")
    spec = ExportSpec(resolution=resolution, in_channels=input_channels(model),
                      calibration=None if calibration is None else np.ascontiguousarray(calibration, np.float32),
                      metadata=dict(metadata or {}), onnx_fp32=onnx_fp32)
    _check_calibration(spec.calibration, precision, spec.input_shape_nchw)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f"exports.{fmt}")
    path = module.export(model, precision, out_dir, spec)
    return Path(path)
