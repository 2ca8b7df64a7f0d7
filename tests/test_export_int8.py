"""Int8 files are judged where it matters: a trained network on real images, through the gate's criteria.

The gate's int8 criteria (exports.verify.parity_failures): top-1 agreement with the fp32 reference
>= 98 % and accuracy drop <= 1 point. A max |logit diff| bound is no int8 criterion: int8 kernels
differ across CPUs (VNNI or not) and an untrained network's logits are near-ties.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_fixtures import trained_smallest_subnet

from exports import FORMATS
from exports.convert import convert
from exports.runtime import load_session
from exports.verify import parity_failures, parity_figures

INT8_FORMATS = [f for f in FORMATS if "int8" in FORMATS[f].precisions]
WRONG_SCALE = 20.0  # calibration ranges 20x too wide: about 4 of the 8 bits lost, a plausible scale bug
QEMU = shutil.which("qemu-x86_64")
AVX2_CPU = "Haswell"  # AVX2 + FMA, no AVX-512 and no VNNI: the CPU kind on which int8 saturation shows


@pytest.fixture(scope="module")
def int8_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run whose smallest sub-network was trained on (2 epochs, ~93 % validation accuracy,
    in the supernet, so `factory export --arch min` extracts it): the tiny run's own networks are near
    chance and their near-tie logits flip under any int8 rounding (agreement ~85-90 %)."""
    import torch

    from factory.data import to_model_input
    from factory.run import load_run, save_supernet

    out = tmp_path_factory.mktemp("int8_run") / "run"
    shutil.copytree(tiny_run, out)
    run = load_run(out)
    net, arch, ds = run.supernet, run.space.smallest(), run.dataset()
    x, y = to_model_input(ds.train.images, arch.resolution, run.mean, run.std), ds.train.labels
    torch.set_num_threads(1)
    torch.manual_seed(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)
    with net.activated(arch):
        net.train()
        for _ in range(2):
            for idx in torch.randperm(len(x), generator=gen).split(64):
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    save_supernet(net, run.space, out / "supernet.pt")
    return out


def _export_int8(run: Path, out: Path):
    from click.testing import CliRunner

    from factory.cli import cli

    return CliRunner().invoke(cli, ["export", "--run", str(run), "--arch", "min", "--formats", "onnx",
                                    "--precision", "int8", "--out", str(out), "--repeats", "10"])


@pytest.mark.slow  # trains the smallest sub-network for 2 epochs, then an int8 conversion and the gate
def test_int8_package_is_published_and_a_broken_calibration_is_refused(int8_run, tmp_path, monkeypatch):
    import json

    from exports.verify import verify_package

    good = _export_int8(int8_run, tmp_path / "dist" / "good")
    assert good.exit_code == 0, good.output
    manifest = json.loads((tmp_path / "dist" / "good" / "manifest.json").read_text())
    (entry,) = manifest["files"]
    assert (entry["format"], entry["precision"]) == ("onnx", "int8")
    fig = manifest["metrics"]["files"]["model.onnx"]
    assert fig["top1_agreement"] >= 0.98 and manifest["metrics"]["reference_accuracy"] >= 0.85
    assert verify_package(tmp_path / "dist" / "good", latency_repeats=0)["passed"]

    import factory.prepared

    real = factory.prepared.to_model_input  # makes the int8 calibration images (and nothing else in an export)
    monkeypatch.setattr(factory.prepared, "to_model_input", lambda *a, **k: real(*a, **k) * 1000.0)
    broken = _export_int8(int8_run, tmp_path / "dist" / "broken")
    assert broken.exit_code == 4, broken.output
    assert "not published" in broken.output and "int8 top-1 agreement" in broken.output, broken.output
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["good"]  # no package, no staging left


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    # 4 epochs: since the test split took 700 training images, 2 epochs left the OpenVINO int8 file at 97.9 %
    # agreement (refused); 4 give 94 % accuracy and >= 99.0 % agreement in every format
    return trained_smallest_subnet(tmp_path_factory, epochs=4)


@pytest.fixture(scope="module")
def int8_files(trained, tmp_path_factory) -> dict[str, Path]:
    net, r, _, calibration = trained
    root = tmp_path_factory.mktemp("int8")
    return {fmt: convert(net, fmt, "int8", root / fmt, resolution=r, calibration=calibration) for fmt in INT8_FORMATS}


def test_trained_reference_has_learnt(trained):
    _, _, vset, _ = trained
    assert len(vset.labels) >= 500
    assert vset.reference_accuracy >= 0.85  # int8 errors must be able to cost accuracy


@pytest.mark.slow  # int8 conversions (TensorFlow, NNCF, ONNX Runtime calibration)
@pytest.mark.parametrize("fmt", INT8_FORMATS)
def test_int8_file_passes_the_gate_on_real_images(int8_files, trained, fmt):
    _, _, vset, _ = trained
    fig = parity_figures(load_session(int8_files[fmt], threads=1).run(vset.inputs), vset)
    assert parity_failures("int8", fig) == [], fig


@pytest.mark.slow
@pytest.mark.parametrize("fmt", INT8_FORMATS)
def test_int8_file_with_a_wrong_calibration_scale_is_refused(trained, tmp_path, fmt):
    net, r, vset, calibration = trained
    broken = convert(net, fmt, "int8", tmp_path, resolution=r, calibration=calibration * WRONG_SCALE)
    failures = parity_failures("int8", parity_figures(load_session(broken, threads=1).run(vset.inputs), vset))
    assert any("top-1 agreement" in f for f in failures), failures


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (Debian: apt-get install qemu-user); "
                                         ".ci/run installs it")
def test_int8_files_pass_the_gate_on_an_avx2_only_cpu(int8_files, trained, tmp_path):
    """The same files, run on an emulated CPU without AVX-512 and VNNI, still pass the gate.

    Full-range int8 weights saturate there (u8 x s8 pair sums overflow 16 bits) and the OpenVINO file
    fell to ~97.5 % agreement; the exporters quantize weights in half the range to avoid it."""
    _, _, vset, _ = trained
    io = tmp_path / "io.npz"
    np.savez(io, inputs=vset.inputs)
    files = [str(int8_files[f]) for f in INT8_FORMATS]
    runner = Path(__file__).with_name("avx2_runner.py")
    proc = subprocess.run([QEMU, "-cpu", AVX2_CPU, sys.executable, str(runner), str(io), *files],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with np.load(tmp_path / "outputs.npz") as out:
        figures = {fmt: parity_figures(out[f"out_{i}"], vset) for i, fmt in enumerate(INT8_FORMATS)}
    failing = {fmt: parity_failures("int8", fig) for fmt, fig in figures.items() if parity_failures("int8", fig)}
    assert not failing, (failing, figures)
