"""`factory verify` re-derives the manifest's claims from the package itself and refuses contradictions.

Each case changes one claim in a copy of a real package (the tiny run's smallest sub-network in ONNX,
TFLite and OpenVINO) and expects exit 4 with a message naming the field; the untouched copy passes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from export_fixtures import shared_package

from exports.verify import VerificationSet, file_record, verify_package
from factory.cli import cli

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def package(tiny_run, tmp_path_factory):
    return shared_package(tmp_path_factory, tiny_run, "min_fp32")


@pytest.fixture
def copy(package, tmp_path):
    dst = tmp_path / "pkg"
    shutil.copytree(package, dst)
    return dst


def _edit(pkg: Path, change: Callable[[Manifest], None]) -> None:
    manifest = json.loads((pkg / "manifest.json").read_text())
    change(manifest)
    (pkg / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _verify(pkg: Path):
    return CliRunner().invoke(cli, ["verify", str(pkg), "--repeats", "0"])


def _entry(m: Manifest, path: str) -> dict[str, Any]:
    return next(f for f in m["files"] if f["path"] == path)


def _set(*keys: str | int, value: Any = None, scale: float | None = None, add: float | None = None):
    """A change that sets (or scales / shifts) the value at manifest[keys[0]][keys[1]]...; a key "file:PATH"
    selects that files[] entry."""
    def change(m: Manifest) -> None:
        node: Any = m
        for key in keys[:-1]:
            node = _entry(m, key[5:]) if isinstance(key, str) and key.startswith("file:") else node[key]
        last = keys[-1]
        node[last] = value if scale is None and add is None else node[last] * (scale or 1) + (add or 0)
    return change


def _drop_last_label(m: Manifest) -> None:
    m["labels"] = m["labels"][:-1]


def _deeper(m: Manifest) -> None:
    m["arch"]["depths"][0] += 1


# (id, change, text the refusal must contain)
TAMPERS = [
    ("label-renamed", _set("labels", 3, value="three"), "manifest labels: differ from labels.txt"),
    ("resolution", _set("input", "resolution", value=24), "manifest input.resolution: 24"),
    ("channels", _set("input", "channels", value=1), "manifest input.channels: 1"),
    ("mean", _set("input", "mean", 0, add=0.1), "manifest input.mean"),
    ("std", _set("input", "std", 1, scale=2.0), "manifest input.std"),
    ("input-shape", _set("file:model.onnx", "input_shape", value=[1, 3, 24, 24]),
     "manifest files[model.onnx].input_shape"),
    ("layout", _set("file:model.tflite", "layout", value="NCHW"), "manifest files[model.tflite].layout"),
    ("format", _set("file:model.onnx", "format", value="tflite"), "manifest files[model.onnx].format"),
    ("runtime", _set("file:openvino/model.xml", "runtime", value="onnxruntime"),
     "manifest files[openvino/model.xml].runtime"),
    ("precision-onnx", _set("file:model.onnx", "precision", value="fp16"), "manifest files[model.onnx].precision"),
    ("precision-tflite", _set("file:model.tflite", "precision", value="fp16"),
     "manifest files[model.tflite].precision: 'fp16', but the file's tensor types make it fp32"),
    ("arch", _deeper, "manifest arch.depths"),
    ("ofa-arch", _set("ofa_arch", "ks", 0, value=7), "manifest ofa_arch.ks"),
    ("accuracy", _set("metrics", "files", "model.onnx", "accuracy", value=0.93),
     "manifest metrics.files[model.onnx].accuracy: 0.93"),
    ("agreement", _set("metrics", "files", "model.tflite", "top1_agreement", value=0.5),
     "manifest metrics.files[model.tflite].top1_agreement: 0.5"),
    ("max-abs-diff", _set("metrics", "files", "openvino/model.xml", "max_abs_diff", scale=1e-3),
     "manifest metrics.files[openvino/model.xml].max_abs_diff"),
    ("relative-diff", _set("metrics", "files", "model.onnx", "relative_diff", scale=1e-3),
     "manifest metrics.files[model.onnx].relative_diff"),
    ("reference-accuracy", _set("metrics", "reference_accuracy", add=0.25), "manifest metrics.reference_accuracy"),
    ("validation-images", _set("metrics", "validation_images", value=5000), "manifest metrics.validation_images: 5000"),
    ("size", _set("metrics", "files", "model.tflite", "size_bytes", scale=0.5),
     "manifest metrics.files[model.tflite].size_bytes"),
    ("test-value", _set("metrics", "test", "files", "model.onnx", "value", add=0.3),
     "manifest metrics.test.files[model.onnx].value"),
    ("test-ci95", _set("metrics", "test", "pytorch", "ci95", 0, add=0.05), "manifest metrics.test.pytorch.ci95"),
    ("stored-images", _set("verification", "images", value=150), "manifest verification.images: 150"),
]


def test_untouched_package_passes_and_lists_what_it_checked(package):
    report = verify_package(package, latency_repeats=0)
    checks = report["manifest_checks"]
    assert report["passed"] and not report["failures"]
    joined = " | ".join(checks["checked"])
    for claim in ("labels", "input.resolution", "embedded metadata", "ofa_arch", "metrics.files[*].size_bytes",
                  "metrics.files[*].accuracy", "metrics.test"):
        assert claim in joined, claim
    result = _verify(package)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("change", "needle"), [t[1:] for t in TAMPERS], ids=[t[0] for t in TAMPERS])
def test_changed_manifest_claim_is_refused_naming_the_field(copy, change, needle):
    _edit(copy, change)
    result = _verify(copy)
    assert result.exit_code == 4, result.output
    assert needle in result.output, result.output
    assert "Traceback" not in result.output


def test_labels_txt_changed_or_a_label_dropped_is_refused(copy):
    (copy / "labels.txt").write_text("".join(f"{x}\n" for x in "0123456789"[::-1]))
    result = _verify(copy)
    assert result.exit_code == 4 and "manifest labels: differ from labels.txt" in result.output, result.output
    _edit(copy, _drop_last_label)
    (copy / "labels.txt").write_text("".join(f"{x}\n" for x in "012345678"))
    result = _verify(copy)
    assert result.exit_code == 4, result.output
    assert "manifest labels: 9 names, but the model has 10 outputs" in result.output, result.output


def test_changed_verification_file_fails_its_checksum(copy):
    vset = VerificationSet.load(copy / "verification.npz")
    with np.load(copy / "verification.npz") as data:
        arrays = dict(data)
    arrays["labels"] = np.roll(vset.labels, 1)  # the stored labels shifted: accuracy figures would change
    np.savez_compressed(copy / "verification.npz", **arrays)
    result = _verify(copy)
    assert result.exit_code == 4, result.output
    assert "verification.npz: s" in result.output and "manifest says" in result.output, result.output


def test_macs_and_params_are_checked_when_the_manifest_records_the_space(copy):
    def record_space(m: Manifest) -> None:
        m["lineage"]["space"] = {"name": m["lineage"]["space"]["name"], "phi": 0.0, "sampling": "independent",
                                 "width": 1.0}

    _edit(copy, record_space)
    report = verify_package(copy, latency_repeats=0)
    assert "metrics.macs/params/peak_activation_bytes" in report["manifest_checks"]["checked"]
    _edit(copy, _set("metrics", "params", add=1000))
    result = _verify(copy)
    assert result.exit_code == 4 and "manifest metrics.params" in result.output, result.output


def test_package_written_before_outcomes_and_images_were_stored_still_verifies(copy):
    vset = VerificationSet.load(copy / "verification.npz")
    VerificationSet(vset.inputs, vset.labels, vset.reference).save(copy / "verification.npz")  # the old layout

    def old_record(m: Manifest) -> None:
        m["verification"].update(file_record(copy, "verification.npz"))

    _edit(copy, old_record)
    report = verify_package(copy, latency_repeats=0)
    assert report["passed"]
    skipped = " | ".join(report["manifest_checks"]["skipped"])
    assert "metrics.files[*].accuracy" in skipped and "input.mean/std/scale" in skipped
    _edit(copy, _set("metrics", "files", "model.onnx", "accuracy", value=0.93))
    assert verify_package(copy, latency_repeats=0)["passed"]  # not re-derivable there: skipped, not refused


@pytest.fixture(scope="module")
def package_with_images(tiny_run, tmp_path_factory):
    """An ONNX package whose verification set carries the raw uint8 images (what an exporter that has them
    stores), written by the real package writer."""
    import torch

    from exports.package import PackageRequest, write_package
    from factory.data import to_model_input
    from factory.prepared import prepare_subnet
    from factory.run import load_run

    torch.set_num_threads(1)
    run = load_run(tiny_run)
    prepared = prepare_subnet(run, run.space.smallest(), "fp32")
    val = run.dataset().val
    inputs = to_model_input(val.images, prepared.arch.resolution, run.mean, run.std)
    with torch.no_grad():
        reference = prepared.model(inputs)
    vset = VerificationSet(inputs.numpy(), val.labels.numpy(), reference.numpy(), images=val.images.numpy())
    req = PackageRequest(model=prepared.model, formats=("onnx",), precision="fp32",
                         preprocessing=prepared.preprocessing, labels=list(prepared.labels), validation=vset,
                         arch=prepared.arch.to_dict(), latency_repeats=3)
    return write_package(req, tmp_path_factory.mktemp("with_images") / "pkg").path


@pytest.mark.parametrize(("field", "change"), [("mean", _set("input", "mean", 1, add=0.05)),
                                               ("std", _set("input", "std", 2, scale=1.5))])
def test_mean_and_std_are_re_derived_from_the_stored_raw_images(package_with_images, tmp_path, field, change):
    stored = VerificationSet.load(package_with_images / "verification.npz")
    assert stored.images is not None and stored.images.shape[-1] == 28 != stored.inputs.shape[-1]  # resized
    report = verify_package(package_with_images, latency_repeats=0)
    assert any("input.mean/std/scale" in c for c in report["manifest_checks"]["checked"])
    copy = tmp_path / "pkg"
    shutil.copytree(package_with_images, copy)
    _edit(copy, change)
    result = _verify(copy)
    assert result.exit_code == 4, result.output
    assert f"manifest input.{field}: " in result.output and "were made from the stored raw images" in result.output
