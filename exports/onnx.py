"""ONNX: `torch.onnx.export` (TorchScript exporter, opset 17), checked with `onnx.checker`.

fp16 stores weights in fp16 with a Cast back to fp32 (ONNX Runtime's CPU provider has no fp16 conv
kernels on x86, and onnxconverter-common is not a dependency); int8 is ONNX Runtime static QDQ
quantization, per-channel 7-bit-range weights (`reduce_range`, the same overflow fix as the OpenVINO
exporter: without VNNI, full-range u8 x s8 products saturate), calibrated on the given images.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exports import FORMATS
from exports.convert import ExportSpec

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export(model: nn.Module, precision: str, out_dir: Path, spec: ExportSpec) -> Path:
    import onnx

    path = out_dir / FORMATS["onnx"].file_name
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        fp32_path = fp32_onnx(model, spec, Path(tmp))
        proto = onnx.load(str(fp32_path))
        if precision == "fp16":
            proto = weights_to_fp16(proto)
        elif precision == "int8":
            assert spec.calibration is not None  # checked by convert()
            proto = _quantize_int8(fp32_path, Path(tmp), spec.calibration)
        _set_metadata(proto, {**spec.metadata, "precision": precision, "layout": "NCHW"})
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(path))
    return path


def export_fp32(model: nn.Module, path: Path, spec: ExportSpec) -> None:
    x = torch.zeros(spec.input_shape_nchw)
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True)


def fp32_onnx(model: nn.Module, spec: ExportSpec, tmp: Path) -> Path:
    """The fp32 ONNX export of `model`: the one `spec.onnx_fp32` names, else a new one in `tmp`."""
    if spec.onnx_fp32 is not None:
        return spec.onnx_fp32
    path = tmp / "fp32.onnx"
    export_fp32(model, path, spec)
    return path


def weights_to_fp16(proto: Any) -> Any:
    """Store every float32 initializer as fp16 followed by a Cast to fp32: half the file, fp32 compute."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    new_inits, casts = [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            new_inits.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        new_inits.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=init.name + "_cast"))
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


class _Calibration:
    """onnxruntime CalibrationDataReader over (N, C, r, r) float32 images, one per batch."""

    def __init__(self, images: np.ndarray) -> None:
        self._images = images
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._images):
            return None
        x = self._images[self._i : self._i + 1]
        self._i += 1
        return {INPUT_NAME: x}

    def rewind(self) -> None:
        self._i = 0


def _quantize_int8(fp32_path: Path, tmp: Path, calibration: np.ndarray) -> Any:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    out = tmp / "int8.onnx"
    quantize_static(str(pre), str(out), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, reduce_range=True)
    return onnx.load(str(out))


def _set_metadata(proto: Any, metadata: dict[str, Any]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key = str(key)
        entry.value = value if isinstance(value, str) else json.dumps(value)
