"""A package from a trained run: layout, manifest, checksums, model card, atomic publish, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from export_fixtures import shared_package

from exports import FORMATS
from exports.files import sha256_file
from exports.package import PackageRequest, Preprocessing, write_package
from exports.verify import VerificationSet
from factory.errors import UserInputError

FACTORY = [sys.executable, "-m", "factory"]


@pytest.fixture(scope="module")
def package(tiny_run, tmp_path_factory):
    return shared_package(tmp_path_factory, tiny_run, "min_fp32")


@pytest.mark.slow  # exports the shared files (TensorFlow import + conversions)
def test_package_has_the_documented_layout_and_checksums(package, tiny_run):
    names = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    assert names == {"manifest.json", "labels.txt", "README.md", "verification.npz", "model.onnx", "model.tflite",
                     "openvino/model.xml", "openvino/model.bin"}
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert [f["format"] for f in manifest["files"]] == ["onnx", "tflite", "openvino"]
    for entry in manifest["files"]:
        assert entry["layout"] == FORMATS[entry["format"]].layout
        for rec in [entry, *entry["extra_files"]]:
            assert rec["sha256"] == sha256_file(package / rec["path"])
            assert rec["size_bytes"] == (package / rec["path"]).stat().st_size
    assert manifest["files"][2]["extra_files"][0]["path"] == "openvino/model.bin"
    assert (package / "labels.txt").read_text().splitlines() == manifest["labels"]
    from factory.run import load_run

    run = load_run(tiny_run)
    assert manifest["lineage"]["checkpoint_sha256"] == run.checkpoint_sha256
    assert manifest["arch"] == run.space.smallest().to_dict()
    assert manifest["input"]["resolution"] == run.space.smallest().resolution
    assert manifest["input"]["mean"] == pytest.approx(list(run.mean))
    assert manifest["input"]["color_order"] == "RGB"
    assert manifest["versions"]["onnxruntime"] and manifest["versions"]["tensorflow"]


def test_published_package_is_readable_by_others(package):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    for path in [package, *package.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o777 if path.is_dir() else 0o666) & ~umask, f"{path}: mode {oct(mode)}"
        if not umask & 0o044:
            assert mode & 0o044 == 0o044  # group and others can read it (mkdtemp's 0700 could not)


def test_manifest_metrics_match_the_pytorch_reference(package):
    manifest = json.loads((package / "manifest.json").read_text())
    metrics = manifest["metrics"]
    stored = len(VerificationSet.load(package / "verification.npz").labels)
    assert stored == min(200, metrics["validation_images"]) == manifest["verification"]["images"]
    assert metrics["macs"] > 0 and metrics["params"] > 0
    for entry in manifest["files"]:
        m = metrics["files"][entry["path"]]
        # fp32 files agree with PyTorch on every image, so their accuracy is the reference accuracy
        assert m["accuracy"] == pytest.approx(metrics["reference_accuracy"], abs=1 / metrics["validation_images"])
        assert m["relative_diff"] <= 1e-4
        assert 0 < m["latency_p50_ms"] <= m["latency_p95_ms"]


def test_model_card_has_a_loading_example_and_numbers_per_format(package):
    card = (package / "README.md").read_text()
    for needle in ("import onnxruntime", "from ai_edge_litert.interpreter import Interpreter", "import openvino",
                   "`model.onnx`", "`model.tflite`", "`openvino/model.xml`", "p50 ms"):
        assert needle in card


def test_onnx_metadata_carries_labels_and_preprocessing(package):
    import onnx

    props = {p.key: p.value for p in onnx.load(str(package / "model.onnx")).metadata_props}
    manifest = json.loads((package / "manifest.json").read_text())
    assert json.loads(props["labels"]) == manifest["labels"]
    assert json.loads(props["input"])["mean"] == manifest["input"]["mean"]


@pytest.mark.slow  # a fresh `factory export` process (torch + TensorFlow imports), then the export again
def test_export_killed_mid_package_leaves_no_package_and_a_rerun_publishes_one(tiny_run, tmp_path):
    dist = tmp_path / "dist"
    out = dist / "pkg"
    args = ["export", "--run", str(tiny_run), "--arch", "min", "--formats", "onnx,tflite", "--out", str(out),
            "--repeats", "5"]
    proc = subprocess.Popen([*FACTORY, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    watchdog = threading.Timer(300, proc.kill)  # a hung export fails the test instead of hanging it
    watchdog.start()
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # the first file is written into the staging folder: kill mid-package
        seen.append(line)
        if line.startswith("[1/2] onnx"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)  # killed, not finished or crashed
    staging = sorted(dist.glob(".pkg.tmp-*"))
    assert len(staging) == 1 and (staging[0] / "model.onnx").is_file(), staging  # the kill landed mid-export
    assert not (staging[0] / "manifest.json").exists() and not out.exists()  # nothing at the destination

    from click.testing import CliRunner

    from exports.verify import verify_package
    from factory.cli import cli

    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code == 0, rerun.output
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {"manifest.json", "labels.txt", "README.md", "verification.npz", "model.onnx", "model.tflite"}
    assert verify_package(out, latency_repeats=0)["passed"]


def test_bad_inputs_are_refused_with_clear_messages(tiny_run, tmp_path):
    def run_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*FACTORY, "export", *args], capture_output=True, text=True, timeout=120)

    base = ["--run", str(tiny_run), "--out", str(tmp_path / "p")]
    r = run_cli(*base, "--formats", "onnx,onxx")
    assert r.returncode == 2 and "unknown format 'onxx'; allowed: onnx, tflite, openvino" in r.stderr
    r = run_cli(*base, "--formats", "onnx", "--precision", "int4")
    assert r.returncode == 2 and "'int4' is not one of 'fp32', 'fp16', 'int8'" in r.stderr
    r = run_cli("--run", str(tmp_path / "nope"), "--formats", "onnx", "--out", str(tmp_path / "p"))
    assert r.returncode == 2 and "no such folder" in r.stderr and "Traceback" not in r.stderr
    bad_arch = tmp_path / "arch.json"
    bad_arch.write_text(json.dumps({"resolution": 99, "depths": [2] * 5, "kernel_sizes": [3] * 20,
                                    "expand_ratios": [3] * 20}))
    r = run_cli(*base, "--formats", "onnx", "--arch", str(bad_arch))
    assert r.returncode == 2 and "resolution" in r.stderr and "99" in r.stderr
    assert not (tmp_path / "p").exists()


def test_int8_without_calibration_and_foreign_folders_are_refused(package, tmp_path):
    vset = VerificationSet.load(package / "verification.npz")
    req = PackageRequest(model=None, formats=("onnx",), precision="int8",  # type: ignore[arg-type]
                         preprocessing=Preprocessing(20, (0.1, 0.1, 0.1), (0.3, 0.3, 0.3)),
                         labels=[str(i) for i in range(vset.reference.shape[1])], validation=vset)
    with pytest.raises(ValueError, match="int8 needs calibration data"):
        write_package(req, tmp_path / "p")
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    req = PackageRequest(model=None, formats=("onnx",), precision="fp32",  # type: ignore[arg-type]
                         preprocessing=req.preprocessing, labels=req.labels, validation=vset)
    with pytest.raises(ValueError, match="exists and is not a package"):
        write_package(req, foreign)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_target_and_options_must_agree(tiny_run):
    from factory.ship.export import resolve_choice
    from targets.profile import TargetProfile

    profile = TargetProfile(name="t", runtime="tflite", precision="int8", threads=2)
    choice = resolve_choice(None, None, None, profile)
    assert (choice.formats, choice.precision, choice.threads) == (("tflite",), "int8", 2)
    with pytest.raises(UserInputError, match="asks for int8"):
        resolve_choice(None, "fp32", None, profile)
    with pytest.raises(UserInputError, match="runs tflite"):
        resolve_choice(("onnx",), None, None, profile)
    assert resolve_choice(("onnx", "onnx"), None, None, None).formats == ("onnx",)


def test_republishing_replaces_the_old_package_atomically(package, tmp_path):
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    vset = VerificationSet.load(copy / "verification.npz")
    assert np.isfinite(vset.reference).all()
    from exports.package import _publish

    new = tmp_path / ".pkg.tmp-x"
    shutil.copytree(package, new)
    (new / "labels.txt").write_text("replaced\n")
    _publish(new, copy)
    assert (copy / "labels.txt").read_text() == "replaced\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_target_budgets_checked_here_exclude_remote_latency_and_memory():
    from factory.ship.export import _budgets
    from targets.profile import Constraints, TargetProfile

    constraints = Constraints(latency_p50_ms=1.0, latency_p95_ms=2.0, size_mb=3.0, peak_memory_mb=4.0)
    local = TargetProfile(name="here", runtime="onnxruntime", precision="fp32", constraints=constraints)
    remote = TargetProfile(name="pi", runtime="tflite", precision="fp32", constraints=constraints,
                           latency_source="import")
    assert _budgets(local) == {"latency_p50_ms": 1.0, "latency_p95_ms": 2.0, "size_mb": 3.0}
    assert _budgets(remote) == {"size_mb": 3.0}
    assert _budgets(None) == {}
