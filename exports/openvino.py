"""OpenVINO: the module exported to ONNX (as the ONNX exporter does), read by `ov.convert_model`, saved as IR
(model.xml + model.bin). Through ONNX rather than OpenVINO's PyTorch frontend: the frontend traces with
TorchScript and took ~2 s a model against ~1 s, for the same graph (HSigmoid is spelled HardSigmoid);
latency tables convert 40 probe models, so this halves their export (docs/decisions.md 2026-12-01).

fp16 = `compress_to_fp16` (weights stored fp16, decompressed at load); int8 = `nncf.quantize` on the
calibration images, weights in half the int8 range on every layer (NNCF's overflow fix): CPUs without
VNNI (AVX2, AVX-512 before VNNI) saturate full-range u8 x s8 products, so a full-range file computes
differently there than on the machine that verified it. Metadata (labels, preprocessing, ...) goes into
`rt_info` under `model_info`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from exports import FORMATS
from exports.convert import ExportSpec
from exports.runtime import import_openvino, openvino_telemetry_declined


def export(model: nn.Module, precision: str, out_dir: Path, spec: ExportSpec) -> Path:
    from exports.onnx import fp32_onnx

    ov = import_openvino()

    path = out_dir / FORMATS["openvino"].file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        onnx_path = fp32_onnx(model, spec, Path(tmp))
        with openvino_telemetry_declined():
            ov_model = ov.convert_model(str(onnx_path), input=[list(spec.input_shape_nchw)])
    if precision == "int8":
        ov_model = _quantize_int8(ov_model, spec)
    _set_rt_info(ov_model, {**spec.metadata, "precision": precision, "layout": "NCHW"})
    ov.save_model(ov_model, str(path), compress_to_fp16=(precision == "fp16"))
    return path


def _quantize_int8(ov_model: Any, spec: ExportSpec) -> Any:
    with openvino_telemetry_declined():  # NNCF decides at import
        import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    assert spec.calibration is not None  # checked by convert()
    samples = [spec.calibration[i : i + 1] for i in range(len(spec.calibration))]
    with openvino_telemetry_declined():
        return nncf.quantize(ov_model, nncf.Dataset(samples), subset_size=len(samples),
                             preset=nncf.QuantizationPreset.PERFORMANCE,
                             advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))


def _set_rt_info(ov_model: Any, metadata: dict[str, Any]) -> None:
    for key, value in metadata.items():
        ov_model.set_rt_info(value if isinstance(value, str) else json.dumps(value), ["model_info", str(key)])
