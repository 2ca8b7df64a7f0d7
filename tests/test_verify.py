"""The verification gate: passes good packages, names the file and figure that fails otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
from export_fixtures import shared_package

from exports.convert import convert
from exports.verify import VerificationFailed, budget_failures, file_record, parity_failures, verify_package

FACTORY = [sys.executable, "-m", "factory"]


@pytest.fixture(scope="module")
def package(tiny_run, tmp_path_factory):
    return shared_package(tmp_path_factory, tiny_run, "min_fp32")


@pytest.fixture
def copy(package, tmp_path):
    dst = tmp_path / "pkg"
    shutil.copytree(package, dst)
    return dst


def _rewrite_record(pkg, rel):
    manifest = json.loads((pkg / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["path"] == rel)
    entry.update(file_record(pkg, rel))
    (pkg / "manifest.json").write_text(json.dumps(manifest))


def test_good_package_passes_with_a_json_report(package):
    report = verify_package(package, latency_repeats=3)
    assert report["passed"] and not report["failures"]
    assert [f["format"] for f in report["files"]] == ["onnx", "tflite", "openvino"]
    assert all(f["relative_diff"] <= 1e-4 and f["top1_agreement"] == 1.0 for f in report["files"])
    json.dumps(report)
    out = subprocess.run([*FACTORY, "verify", str(package), "--json", "--repeats", "3"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["passed"] is True


def test_tampered_file_fails_its_checksum_with_exit_4(copy):
    with open(copy / "model.tflite", "ab") as f:
        f.write(b"\0")
    with pytest.raises(VerificationFailed, match=r"model\.tflite: size \d+ bytes, manifest says \d+") as info:
        verify_package(copy, latency_repeats=0)
    failing = [f["path"] for f in info.value.report["files"] if not f["passed"]]
    assert failing == ["model.tflite"]
    out = subprocess.run([*FACTORY, "verify", str(copy), "--repeats", "0"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 4
    assert "model.tflite" in out.stderr and "sha256" in out.stderr and "Traceback" not in out.stderr


def test_file_computing_something_else_fails_parity_naming_the_figure(copy, tiny_run):
    from factory.evaluate import calibrated_subnet
    from factory.run import load_run

    run = load_run(tiny_run)
    model = calibrated_subnet(run, run.space.smallest())
    with torch.no_grad():
        model.head.classifier.bias[3] += 0.05  # a small, systematic error: labels mostly unchanged
    manifest = json.loads((copy / "manifest.json").read_text())
    convert(model, "onnx", "fp32", copy / "wrong", resolution=manifest["input"]["resolution"])
    shutil.move(copy / "wrong" / "model.onnx", copy / "model.onnx")
    shutil.rmtree(copy / "wrong")
    _rewrite_record(copy, "model.onnx")
    with pytest.raises(VerificationFailed, match=r"model\.onnx: fp32 max abs logit diff .* allowed <= 0\.0001 x"):
        verify_package(copy, latency_repeats=0)


def test_budgets_are_checked_against_measured_figures(copy):
    with pytest.raises(VerificationFailed) as info:
        verify_package(copy, budgets={"latency_p50_ms": 1e-6, "size_mb": 1e-6}, latency_repeats=3)
    message = str(info.value)
    for path in ("model.onnx", "model.tflite", "openvino/model.xml"):
        assert f"{path}: latency p50" in message and f"{path}: size" in message
    with pytest.raises(ValueError, match="budgets: unknown key"):
        verify_package(copy, budgets={"latency_p99_ms": 1.0}, latency_repeats=0)


def test_latency_miss_timed_under_contention_says_so():
    fig = {"latency_p50_ms": 0.8, "size_bytes": 10, "accuracy": 0.9, "latency_rounds": 3}
    (clean,) = budget_failures({**fig, "latency_contended_rounds": 1}, {"latency_p50_ms": 0.4})
    assert clean == "latency p50 0.800 ms > budget 0.4 ms"
    (contended,) = budget_failures({**fig, "latency_contended_rounds": 3}, {"latency_p50_ms": 0.4})
    assert contended.startswith(clean) and "under contention: 3 of 3 rounds" in contended
    (counted,) = budget_failures({**fig, "latency_contended_rounds": 2, "latency_contended_counted": True},
                                 {"latency_p50_ms": 0.4})
    assert "under contention: 2 of 3 rounds" in counted  # too few clean rounds: the figure pools them all


def _fig(agreement, accuracy, reference=0.9):
    return {"top1_agreement": agreement, "accuracy": accuracy, "reference_accuracy": reference}


def test_int8_gate_thresholds():
    assert parity_failures("int8", _fig(0.99, 0.895)) == []
    assert parity_failures("int8", _fig(0.98, 0.89)) == []
    (msg,) = parity_failures("int8", _fig(0.975, 0.9))
    assert "top-1 agreement 97.50%" in msg and ">= 98%" in msg
    (msg,) = parity_failures("int8", _fig(0.99, 0.885))
    assert "drop 1.50 points" in msg
    assert parity_failures("fp16", {"relative_diff": 0.011, "max_abs_diff": 1.1, "logit_scale": 100.0})
    assert not parity_failures("fp16", {"relative_diff": 0.009, "max_abs_diff": 0.9, "logit_scale": 100.0})


def test_not_a_package_is_a_usage_error(tmp_path):
    with pytest.raises(ValueError, match=r"manifest\.json: not found"):
        verify_package(tmp_path)
    out = subprocess.run([*FACTORY, "verify", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "manifest.json: not found" in out.stderr


def test_the_export_gate_needs_the_p50_to_fit_with_its_spread():
    fig = {"latency_p50_ms": 0.50, "latency_p50_spread_ms": 0.08, "size_bytes": 1}
    assert budget_failures(fig, {"latency_p50_ms": 0.55}) == []  # a user's re-timing: the p50 itself
    failures = budget_failures(fig, {"latency_p50_ms": 0.55}, latency_margin=True)
    assert failures and "spread 0.080 ms" in failures[0]
    assert budget_failures(fig, {"latency_p50_ms": 0.60}, latency_margin=True) == []
