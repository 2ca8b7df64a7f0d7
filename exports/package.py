"""Write a deployment package: model files + manifest.json + labels.txt + README.md + verification.npz.

    <out>/ manifest.json · labels.txt · README.md · verification.npz
           model.onnx | model.tflite | openvino/model.xml + model.bin

Everything is written to a hidden temporary folder next to the destination, verified there, and only
then renamed into place (`os.replace`), so a crash or a refused gate never leaves a half package.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from exports import FORMATS, check_precision, get_format
from exports.convert import convert
from exports.files import ordinary_permissions
from exports.intervals import AccuracyEstimate, estimate_text
from exports.modelcard import render_model_card
from exports.runtime import load_session
from exports.signing import SIGNATURE_FILE
from exports.timing import Latency, open_for_timing
from exports.verify import MANIFEST, VERIFICATION_CONTENTS, VERIFICATION_FILE, VerificationSet, file_record, run_gate
from supernets.arch import ArchConfig

SCHEMA_VERSION = 1
TOOL_PACKAGES = ("ofa-factory", "torch", "numpy", "onnx", "onnxruntime", "openvino", "nncf", "tensorflow",
                 "ai-edge-litert")


@dataclass(frozen=True)
class Preprocessing:
    """What a client does to an image before the model sees it (the manifest's `input`)."""

    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    channels: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "channels": self.channels,
            "color_order": "RGB",
            "dtype": "float32",
            "scale": 1 / 255,
            "mean": list(self.mean),
            "std": list(self.std),
            "resize": "bilinear (antialiased) to resolution x resolution, no crop, aspect ratio not kept",
            "formula": "x = (rgb_uint8 / 255 - mean) / std",
            "layout": "per file: NCHW (1, C, r, r) or NHWC (1, r, r, C), see files[].layout",
            "batch": 1,
        }


@dataclass(frozen=True)
class PackageRequest:
    """Everything a package is made from. Arrays are preprocessed (float32 NCHW, normalised).

    `validation` is the set the gate uses at export time (ideally the whole validation split); the first
    `stored_images` of it are stored in the package for `factory verify`. `test` (the run's test split,
    which nothing selected on) only reports: each file's accuracy on it, with its 95% interval.

    Work done before is handed in, not redone: `converted` maps a format to a folder holding its files
    (package layout: FormatSpec.file_name + extra_files) converted from `model` with this precision,
    calibration and `model_metadata` (the search's verified pick); they are copied, not converted again.
    `timings` maps a format to the latency of that very file measured with `exports.timing.measure_latency`;
    the gate checks it instead of timing again. `predicted` holds the search's predicted figures, recorded
    in the manifest next to the measured ones.
    """

    model: nn.Module
    formats: tuple[str, ...]
    precision: str
    preprocessing: Preprocessing
    labels: list[str]
    validation: VerificationSet
    calibration: np.ndarray | None = None
    arch: dict[str, Any] | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] | None = None
    budgets: dict[str, float] = field(default_factory=dict)  # checked by the gate (see exports.verify)
    threads: int = 1
    latency_repeats: int = 200
    stored_images: int = 200
    name: str | None = None
    converted: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, Latency] = field(default_factory=dict)
    predicted: dict[str, float] | None = None
    sign_key: Path | None = None  # EC private key (PEM): the package is signed with model-signing (model.sig)
    test: VerificationSet | None = None

    def check(self) -> None:
        if not self.formats:
            raise ValueError(f"formats: none given; allowed: {list(FORMATS)}")
        for fmt, folder in self.converted.items():
            if fmt not in self.formats or not (Path(folder) / FORMATS[fmt].file_name).is_file():
                raise ValueError(f"converted: {fmt!r} is not among the formats {list(self.formats)} or "
                                 f"{folder} holds no {FORMATS[fmt].file_name}")
        for fmt in self.formats:
            get_format(fmt).check_precision(self.precision)
        check_precision(self.precision)
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats: duplicates in {list(self.formats)}")
        if self.precision == "int8" and (self.calibration is None or len(self.calibration) == 0):
            raise ValueError("int8 needs calibration data (the run's calibration split); none was given")
        if self.validation.reference.shape[1] != len(self.labels):
            raise ValueError(f"labels: {len(self.labels)} names but the model has "
                             f"{self.validation.reference.shape[1]} outputs")


def tool_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in TOOL_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _prepare_destination(out_dir: Path) -> None:
    """Refuse to replace a folder that is not a package (never clobber unrelated files)."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise ValueError(f"out: {out_dir} exists and is not a package (no {MANIFEST}); choose an empty or new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished temporary folder into place; an older package there is swapped out first."""
    ordinary_permissions(tmp)
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / "pkg")
        try:
            os.replace(tmp, out_dir)
        except OSError:
            os.replace(old / "pkg", out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def _session_record(main: Path, threads: int, timing: Latency | None) -> dict[str, Any]:
    """The exact session settings the file is measured and documented with: those of its earlier timing,
    else the configuration it ships in (a .tflite file: the faster of its kernels, measured here)."""
    if timing is not None:
        settings, choice = timing.settings, timing.kernel_choice
    else:
        session, choice = open_for_timing(main, threads)
        settings = session.settings
    record: dict[str, Any] = {"runtime_settings": dict(settings)}
    if choice is not None:
        record["kernel_choice"] = choice.to_dict()
    return record


def _file_entry(root: Path, fmt: str, precision: str, main: Path, resolution: int, channels: int) -> dict[str, Any]:
    spec = FORMATS[fmt]
    rel = main.relative_to(root).as_posix()
    shape = [1, channels, resolution, resolution] if spec.layout == "NCHW" else [1, resolution, resolution, channels]
    entry = {**file_record(root, rel), "format": fmt, "precision": precision, "layout": spec.layout,
             "runtime": spec.runtime, "input_shape": shape, "input_dtype": "float32", "output": "logits (1, K)"}
    entry["extra_files"] = [file_record(root, (main.parent / Path(x).name).relative_to(root).as_posix())
                            for x in spec.extra_files]
    return entry


def _total_size(entry: dict[str, Any]) -> int:
    return entry["size_bytes"] + sum(x["size_bytes"] for x in entry.get("extra_files", []))


def model_metadata(labels: list[str], preprocessing: Preprocessing, arch: dict[str, Any] | None) -> dict[str, Any]:
    """Manifest essentials embedded in the model files themselves (ONNX metadata_props, OpenVINO rt_info).
    Whoever converts a file that may ship (the package writer, the search's verified pick) passes this."""
    return {"labels": list(labels), "input": preprocessing.to_dict(), "arch": arch or {},
            "schema_version": SCHEMA_VERSION}


@dataclass(frozen=True)
class WrittenPackage:
    """A published package: its folder and the manifest written there (metrics included)."""

    path: Path
    manifest: dict[str, Any]


def write_package(req: PackageRequest, out_dir: Path, progress: Callable[[str], None] | None = None) -> WrittenPackage:
    """Convert (or copy `req.converted`), verify and publish a package at `out_dir`.

    Raises ValueError for bad requests (before any work) and exports.verify.VerificationFailed when the
    gate refuses a file; in both cases nothing is left at `out_dir` (an older package there is kept).
    """
    req.check()
    out_dir = Path(out_dir).absolute()
    _prepare_destination(out_dir)
    say = progress or (lambda _msg: None)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        manifest = _build(req, tmp, say)
        if req.sign_key is not None:
            from exports.signing import sign_package

            sign_package(tmp, req.sign_key)
            say(f"signed every file with {req.sign_key} ({SIGNATURE_FILE})")
        _publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WrittenPackage(out_dir, manifest)


def _copy_converted(folder: Path, fmt: str, root: Path) -> Path:
    """The files of `fmt` converted before (package layout under `folder`), copied into the package."""
    spec = FORMATS[fmt]
    for rel in (spec.file_name, *spec.extra_files):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(folder) / rel, root / rel)
    return root / spec.file_name


def _model_files(req: PackageRequest, root: Path, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Each format's file in the package (converted here, or copied when converted before): manifest entries."""
    pre = req.preprocessing
    files = []
    for i, fmt in enumerate(req.formats, 1):
        started = datetime.now(UTC)
        if fmt in req.converted:
            main, how = _copy_converted(req.converted[fmt], fmt, root), "converted and verified by the search"
        else:
            main = convert(req.model, fmt, req.precision, root, resolution=pre.resolution,
                           calibration=req.calibration, metadata=model_metadata(req.labels, pre, req.arch))
            how = f"in {(datetime.now(UTC) - started).total_seconds():.1f} s"
        files.append({**_file_entry(root, fmt, req.precision, main, pre.resolution, pre.channels),
                      **_session_record(main, req.threads, req.timings.get(fmt))})
        say(f"[{i}/{len(req.formats)}] {fmt} {req.precision}: {main.relative_to(root)} "
            f"({_total_size(files[-1]) / 1e6:.2f} MB) {how}")
    return files


def _build(req: PackageRequest, root: Path, say: Callable[[str], None]) -> dict[str, Any]:
    pre = req.preprocessing
    files = _model_files(req, root, say)
    req.validation.head(req.stored_images).save(root / VERIFICATION_FILE)
    (root / "labels.txt").write_text("".join(f"{name}\n" for name in req.labels))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": req.name or root.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "arch": req.arch,
        "ofa_arch": None if req.arch is None else ArchConfig.from_dict(req.arch).to_ofa_dict(),
        "input": pre.to_dict(),
        "labels": list(req.labels),
        "files": files,
        "verification": {**file_record(root, VERIFICATION_FILE), "images": min(req.stored_images,
                                                                               len(req.validation.labels)),
                         "contents": VERIFICATION_CONTENTS,
                         "budgets": dict(req.budgets)},
        "target": req.target,
        "lineage": req.lineage,
        "versions": tool_versions(),
        "metrics": {"threads": req.threads},
    }
    if req.sign_key is not None:
        manifest["signature"] = {"file": SIGNATURE_FILE, "method": "OpenSSF model-signing, elliptic-curve key",
                                 "covers": "every file of the package except the signature itself",
                                 "verify": "factory verify PACKAGE --public-key KEY.pub"}
    _write_json(root / MANIFEST, manifest)
    timings = {FORMATS[fmt].file_name: t for fmt, t in req.timings.items()}
    timing = f"{req.latency_repeats} timed runs each" if len(timings) < len(files) else "latency timed by the search"
    say(f"verifying {len(files)} file(s) on {len(req.validation.labels)} validation images "
        f"(parity, accuracy, {timing}, {req.threads} thread(s))")
    gate = run_gate(root, budgets=req.budgets, threads=req.threads, latency_repeats=req.latency_repeats,
                    vset=req.validation, timings=timings, latency_margin=True)
    report = gate.report
    # with every file's per-image outcomes on the whole validation split: `factory verify` re-derives the figures
    req.validation.head(req.stored_images).save(root / VERIFICATION_FILE, outcomes=gate.outcomes)
    manifest["verification"].update(file_record(root, VERIFICATION_FILE))
    manifest["metrics"] = _metrics(req, report)
    if req.test is not None:
        manifest["metrics"]["test"] = _test_metrics(root, files, req.test, req.threads)
    _write_json(root / MANIFEST, manifest)
    (root / "README.md").write_text(render_model_card(manifest))
    tested = manifest["metrics"].get("test", {}).get("files", {})
    for f in report["files"]:
        test = f", test {estimate_text(tested[f['path']])}" if f["path"] in tested else ""
        say(f"verified {f['path']}: val accuracy {f['accuracy']:.2%}{test}, max |diff| {f['relative_diff']:.1e} x "
            f"scale, agreement {f['top1_agreement']:.1%}, p50 {f['latency_p50_ms']:.3f} ms, "
            f"p95 {f['latency_p95_ms']:.3f} ms")
    return manifest


def _test_metrics(root: Path, files: list[dict[str, Any]], test: VerificationSet, threads: int) -> dict[str, Any]:
    """Each file's accuracy on the test split (run in its own runtime and recorded session settings) and the
    PyTorch reference's, each with its 95% Wilson interval. Reported only: no gate reads it."""
    per_file = {}
    for entry in files:
        session = load_session(root / entry["path"], threads=threads, settings=entry.get("runtime_settings"))
        per_file[entry["path"]] = AccuracyEstimate.of(session.run(test.inputs).argmax(1) == test.labels).to_dict()
    return {
        "split": "test",
        "images": len(test.labels),
        "pytorch": AccuracyEstimate.of(test.reference.argmax(1) == test.labels).to_dict(),
        "files": per_file,
        "note": "the run's test split: no training, predictor, search, pick or gate ever saw it; "
                "ci95 = 95% Wilson interval. Accuracy under files[].accuracy is on the validation split, "
                "which the pick was chosen on (optimistic)",
    }


def _metrics(req: PackageRequest, report: dict[str, Any]) -> dict[str, Any]:
    keep = ("accuracy", "top1_agreement", "max_abs_diff", "relative_diff", "latency_p50_ms", "latency_p95_ms",
            "latency_p50_spread_ms", "latency_rounds", "latency_contended_rounds", "latency_contended_counted",
            "latency_timed_by",
            "size_bytes")  # size_bytes: the model file plus its extra files (OpenVINO .bin)
    predicted = {} if req.predicted is None else {
        "predicted": dict(req.predicted),
        "predicted_note": "the search's figures for this sub-network (accuracy predictor, latency model of the "
                          "target; peak memory is an estimate); measured figures are under files"}
    return {
        "validation_images": len(req.validation.labels),
        "reference_accuracy": req.validation.reference_accuracy,
        "threads": req.threads,
        "latency_repeats": req.latency_repeats,
        "latency_note": "batch 1: the runtime's inference call on a bound input (as benchmark_app / litert-benchmark "
                        "time it), on the export machine, in each file's runtime_settings; p50 / p95 = median / "
                        "95th percentile of all timed runs; p50_spread = slowest round's median minus p50 (the p50 "
                        "budget was met with it)",
        **{k: req.cost[k] for k in ("macs", "params", "peak_activation_bytes") if k in req.cost},
        "files": {f["path"]: {k: f[k] for k in keep if k in f} for f in report["files"]},
        **predicted,
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
