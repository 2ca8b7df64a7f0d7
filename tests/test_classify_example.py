"""examples/classify.py: a stand-alone client gives PyTorch's labels for every format of a package."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from export_fixtures import shared_package, validation_pngs

CLASSIFY = Path(__file__).resolve().parents[1] / "examples" / "classify.py"


def _load_classify():
    spec = importlib.util.spec_from_file_location("classify_example", CLASSIFY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def package(tiny_run, tmp_path_factory):
    return shared_package(tmp_path_factory, tiny_run, "min_fp32")


@pytest.fixture(scope="module")
def pngs(tiny_run, tmp_path_factory):
    return validation_pngs(tmp_path_factory, tiny_run, 100)


def test_client_preprocessing_equals_the_factory_preprocessing(package, tiny_run, pngs):
    from factory.data import to_model_input
    from factory.run import load_run

    run = load_run(tiny_run)
    manifest = json.loads((package / "manifest.json").read_text())
    r = manifest["input"]["resolution"]
    assert r != run.data.image_size  # the smallest sub-network resizes, so the resize rule is exercised
    client = _load_classify()
    got = np.stack([client.preprocess(p, manifest["input"]) for p in pngs[:20]]).transpose(0, 3, 1, 2)
    expected = to_model_input(run.dataset().val.images[:20], r, run.mean, run.std).numpy()
    assert np.abs(got - expected).max() <= 1e-3


@pytest.mark.parametrize("fmt", ["onnx", "tflite", "openvino"])
def test_classify_gives_the_pytorch_subnetwork_labels(package, tiny_run, pngs, fmt):
    from factory.data import to_model_input
    from factory.evaluate import calibrated_subnet
    from factory.run import load_run

    run = load_run(tiny_run)
    manifest = json.loads((package / "manifest.json").read_text())
    model = calibrated_subnet(run, run.space.smallest())
    x = to_model_input(run.dataset().val.images[: len(pngs)], manifest["input"]["resolution"], run.mean, run.std)
    with torch.no_grad():
        expected = model(x).argmax(1).numpy()
    out = subprocess.run([sys.executable, str(CLASSIFY), str(package), *map(str, pngs), "--format", fmt, "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [row["image"] for row in rows] == [str(p) for p in pngs]
    got = np.array([row["index"] for row in rows])
    assert (got == expected).all(), f"{(got != expected).sum()} of {len(got)} labels differ"
    assert [row["label"] for row in rows] == [manifest["labels"][i] for i in expected]


def test_client_imports_only_numpy_pil_and_one_runtime(package, pngs):
    probe = "\n".join([
        "import runpy, sys",
        f"sys.argv = [{str(CLASSIFY)!r}, {str(package)!r}, {str(pngs[0])!r}, '--format', 'onnx']",
        "try:",
        "    runpy.run_path(sys.argv[0], run_name='__main__')",
        "except SystemExit:",
        "    pass",
        "banned = ('torch', 'tensorflow', 'openvino', 'ai_edge_litert', 'factory', 'exports', 'supernets')",
        "print('BANNED', [m for m in banned if m in sys.modules])",
    ])
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert "BANNED []" in out.stdout
    assert str(pngs[0]) in out.stdout
