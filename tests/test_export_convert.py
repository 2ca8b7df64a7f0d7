"""convert() + runtime sessions: every format x precision computes what the PyTorch module computes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from test_supernet import _trained_like

from exports import FORMATS
from exports.convert import convert
from exports.runtime import load_session
from exports.timing import time_session
from supernets import get_space

# fp16 weights: 1e-2 x logit scale. Int8 files are judged by the gate's criteria on a trained network
# (test_export_int8.py): a logit bound on this untrained network depends on the CPU's int8 kernels.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


@pytest.fixture(scope="session")
def subnet_case():
    space = get_space()
    net = _trained_like(space, seed=3)
    arch = space.smallest()
    sub = net.extract(arch).eval()
    gen = torch.Generator().manual_seed(0)
    r = arch.resolution
    x = torch.randn(16, 3, r, r, generator=gen)
    calib = torch.randn(32, 3, r, r, generator=gen).numpy()
    with torch.no_grad():
        ref = sub(x).numpy()
    return sub, r, x.numpy(), ref, calib


@pytest.fixture(scope="session")
def exported(subnet_case, tmp_path_factory):
    torch.set_num_threads(1)
    sub, r, _, _, calib = subnet_case
    root = tmp_path_factory.mktemp("convert")
    return {
        (fmt, prec): convert(sub, fmt, prec, root / f"{fmt}_{prec}", resolution=r, calibration=calib,
                             metadata={"labels": [str(i) for i in range(10)], "resolution": r})
        for fmt in FORMATS
        for prec in FORMATS[fmt].precisions
    }


@pytest.mark.slow  # exports the shared files (TensorFlow import + conversions)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("precision", list(TOLERANCE))
def test_exported_file_matches_pytorch_logits(exported, subnet_case, fmt, precision):
    _, _, x, ref, _ = subnet_case
    path = exported[(fmt, precision)]
    assert path.name == FORMATS[fmt].file_name.split("/")[-1]
    got = load_session(path, threads=1).run(x)
    assert got.shape == ref.shape
    scale = float(np.abs(ref).max())
    assert scale > 1e-2
    assert float(np.abs(got - ref).max()) <= TOLERANCE[precision] * scale


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_fp16_and_int8_files_are_smaller_than_fp32(exported, fmt):
    def size(fmt: str, prec: str) -> int:
        main = exported[(fmt, prec)]
        return sum(p.stat().st_size for p in main.parent.iterdir() if p.is_file())

    assert size(fmt, "fp16") < 0.6 * size(fmt, "fp32")
    assert size(fmt, "int8") < 0.45 * size(fmt, "fp32")


def test_block_compositions_convert_in_every_format(tmp_path):
    """The targets engineer times single blocks: stem, MBConv, head, and a Sequential of them."""
    net = _trained_like(get_space(), seed=4)
    sub = net.extract(net.space.largest()).eval()
    block = sub.blocks[2]
    cases = {
        "stem": (sub.stem, 3, 16),
        "mbconv": (block, (block.expand or block.depthwise).conv.in_channels, 8),
        "head": (sub.head, sub.head.final_expand.conv.in_channels, 2),
        "seq": (torch.nn.Sequential(sub.stem, sub.first_block).eval(), 3, 16),
    }
    gen = torch.Generator().manual_seed(1)
    for name, (module, channels, r) in cases.items():
        x = torch.randn(2, channels, r, r, generator=gen)
        with torch.no_grad():
            ref = module(x).numpy()
        for fmt in FORMATS:
            got = load_session(convert(module, fmt, "fp32", tmp_path / f"{name}_{fmt}", resolution=r)).run(x.numpy())
            assert got.shape == ref.shape, (name, fmt)
            assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max(), (name, fmt)


def test_metadata_is_embedded_in_onnx_and_openvino(exported):
    import onnx
    import openvino as ov

    props = {p.key: p.value for p in onnx.load(str(exported[("onnx", "fp32")])).metadata_props}
    assert json.loads(props["labels"]) == [str(i) for i in range(10)]
    assert props["precision"] == "fp32"
    model = ov.Core().read_model(str(exported[("openvino", "int8")]))
    assert json.loads(model.get_rt_info(["model_info", "labels"]).astype(str)) == [str(i) for i in range(10)]
    assert model.get_rt_info(["model_info", "precision"]).astype(str) == "int8"


def test_time_session_reports_percentiles_over_all_repeats(exported, subnet_case):
    x = subnet_case[2]
    timing = time_session(load_session(exported[("onnx", "fp32")], threads=1), x, warmup=3, repeats=25)
    assert len(timing.samples) == 25
    assert 0 < timing.p50_ms <= timing.p95_ms <= max(timing.samples)


def test_bad_requests_are_refused_with_allowed_values(subnet_case, tmp_path):
    sub, r, *_ = subnet_case
    with pytest.raises(ValueError, match=r"format: unknown 'onxx'; allowed: \['onnx', 'tflite', 'openvino'\]"):
        convert(sub, "onxx", "fp32", tmp_path, resolution=r)
    with pytest.raises(ValueError, match=r"precision: unknown 'int4'"):
        convert(sub, "onnx", "int4", tmp_path, resolution=r)
    with pytest.raises(ValueError, match="int8 needs calibration data"):
        convert(sub, "openvino", "int8", tmp_path, resolution=r)
    with pytest.raises(ValueError, match="calibration: shape"):
        convert(sub, "onnx", "int8", tmp_path, resolution=r, calibration=np.zeros((4, 3, r + 1, r + 1), np.float32))
    with pytest.raises(ValueError, match="training mode"):
        convert(sub.train(), "onnx", "fp32", tmp_path, resolution=r)
    sub.eval()
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # imports OpenVINO and NNCF
def test_openvino_conversions_fork_no_telemetry_process(subnet_case, tmp_path):
    """OpenVINO (at import and per conversion) and NNCF send usage telemetry from a forked process
    unless declined; the factory makes no network calls, and each fork cost ~0.8 s of CPU a model. In a
    fresh process: openvino's import-time event fires once per process."""
    import subprocess
    import sys
    import textwrap

    sub, r, _, _, calib = subnet_case
    torch.save(sub, tmp_path / "sub.pt")
    np.save(tmp_path / "calib.npy", calib[:4])
    code = textwrap.dedent(f"""
        import os, numpy as np, torch
        from exports.convert import convert
        forks = []
        os.register_at_fork(before=lambda: forks.append(1))
        sub = torch.load({str(tmp_path / "sub.pt")!r}, weights_only=False)
        calib = np.load({str(tmp_path / "calib.npy")!r})
        for precision in ("fp16", "int8"):
            convert(sub, "openvino", precision, {str(tmp_path)!r} + "/" + precision, resolution={r},
                    calibration=calib)
        assert os.environ.get("CI") is None, "CI left set"
        print("forks", len(forks))
    """)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "forks 0" in done.stdout.splitlines()
