"""The verification gate: a package's files compute what the PyTorch sub-network computes.

Checks, per file: checksum (sha256 + size) against the manifest; the file loads and runs in its own
runtime; parity with the PyTorch reference logits stored in the package (verification.npz):
    fp32  max |logit diff| <= 1e-4 x logit scale (max |reference logit|)
    fp16  max |logit diff| <= 1e-2 x logit scale
    int8  top-1 agreement with the reference >= 98 % and accuracy drop <= 1 point vs the fp32 reference
and, when budgets are given, the measured p50 / p95 latency and the file size against them. Latency is
timed with `exports.timing.measure_latency`, the method of the latency tables and the pick (median and
95th percentile of all timed runs, contended rounds set aside, nothing re-timed), in the session settings
the manifest records for the file. At export (`latency_margin=True`) the p50 must fit its budget together
with its run-to-run spread, so that the file still passes when its user times it a minute later.
Every failure names the file and the figure; the report is plain JSON-able data either way.

The manifest's claims are re-derived from the package itself and contradictions refused
(`manifest_failures`): labels against labels.txt and the number of outputs; input resolution and
channels against the stored inputs and each file's own input shape; mean / std against the stored raw
images preprocessed again; labels, input, arch, precision and layout against the metadata embedded in
the model files; accuracy, agreement and logit differences against the per-image outcomes stored at
export (on the whole validation split); sizes against the files. What cannot be re-derived is listed
in the report under `manifest_checks.skipped`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exports import FILE_SUFFIX_FORMAT, FORMATS
from exports.budgets import BUDGET_NAMES, GATE_BUDGETS
from exports.files import sha256_file
from exports.intervals import wilson_interval
from exports.runtime import load_session
from exports.timing import Latency, measure_latency
from supernets import ArchConfig, cost
from supernets.space import space_from_record

MANIFEST = "manifest.json"
VERIFICATION_FILE = "verification.npz"
VERIFICATION_CONTENTS = ("inputs (N,C,r,r) float32 preprocessed NCHW, labels (N,), reference (N,K) PyTorch logits, "
                         "images (N,C,H,W) uint8 the inputs were preprocessed from (when the exporter had them); "
                         "split_* = per-image outcomes on the whole validation split the export gate ran on: labels, "
                         "reference top-1 and max |logit|, and per file (split_files) its top-1 and max |logit diff|")
# relative logit budgets per precision (fraction of the logit scale)
PARITY_TOLERANCE: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2}
INT8_MIN_AGREEMENT = 0.98
INT8_MAX_ACCURACY_DROP = 0.01
LATENCY_ROUNDS = 3  # latency_repeats are split into this many rounds (exports.timing.measure_latency)
PREPROCESS_TOLERANCE = 1e-4  # the same float32 arithmetic differs by ~1e-6; a changed mean or std by far more
CLAIM_RTOL = 1e-9  # re-derived figures are computed by the same formula from the same numbers
FLOAT_RERUN_SLACK = 0.01  # fp32/fp16 files: share of stored images whose top-1 may flip on another CPU (near-ties)


class VerificationFailed(Exception):
    """The gate refused a package. `report` holds every figure; the message names what failed."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class VerificationSet:
    """Preprocessed validation images (N, C, r, r) float32 NCHW, labels (N,), PyTorch logits (N, K), and
    optionally the raw uint8 images (N, C, H, W) the inputs were preprocessed from."""

    inputs: np.ndarray
    labels: np.ndarray
    reference: np.ndarray
    images: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.inputs)
        if n == 0 or len(self.labels) != n or len(self.reference) != n:
            raise ValueError(f"verification set: inputs/labels/reference lengths differ or are 0: "
                             f"{len(self.inputs)}/{len(self.labels)}/{len(self.reference)}")
        if self.images is not None and (len(self.images) != n or self.images.dtype != np.uint8):
            raise ValueError(f"verification set: images must be {n} uint8 images, got {len(self.images)} "
                             f"{self.images.dtype}")

    @property
    def reference_accuracy(self) -> float:
        return float((self.reference.argmax(1) == self.labels).mean())

    def head(self, n: int) -> VerificationSet:
        return VerificationSet(self.inputs[:n], self.labels[:n], self.reference[:n],
                               None if self.images is None else self.images[:n])

    def save(self, path: Path, outcomes: SplitOutcomes | None = None) -> None:
        arrays = {"inputs": self.inputs.astype(np.float32), "labels": self.labels.astype(np.int64),
                  "reference": self.reference.astype(np.float32)}
        if self.images is not None:
            arrays["images"] = self.images
        np.savez_compressed(path, **arrays, **(outcomes.to_arrays() if outcomes is not None else {}))

    @classmethod
    def load(cls, path: Path) -> VerificationSet:
        with np.load(path) as data:
            return cls(data["inputs"], data["labels"], data["reference"],
                       data["images"] if "images" in data.files else None)


@dataclass(frozen=True)
class FileOutcome:
    """What one file computed on each image: its top-1 class and its max |logit - reference logit|."""

    top1: np.ndarray
    abs_diff: np.ndarray

    @classmethod
    def of(cls, logits: np.ndarray, vset: VerificationSet) -> FileOutcome:
        return cls(logits.argmax(1), np.abs(logits - vset.reference).max(1))


@dataclass(frozen=True)
class SplitOutcomes:
    """Per-image outcomes of every file on the whole set the export gate ran on (the validation split):
    stored in verification.npz so that `factory verify` re-derives the manifest's accuracy, agreement and
    logit-difference figures, although only the first images of the split ship."""

    labels: np.ndarray
    reference_top1: np.ndarray
    reference_absmax: np.ndarray
    files: dict[str, FileOutcome]

    @classmethod
    def of(cls, vset: VerificationSet, files: dict[str, FileOutcome]) -> SplitOutcomes:
        return cls(vset.labels, vset.reference.argmax(1), np.abs(vset.reference).max(1), dict(files))

    def figures(self, path: str) -> dict[str, float]:
        """The parity figures of one file (`parity_figures`), from its per-image outcomes."""
        return outcome_figures(self.files[path], self.labels, self.reference_top1, self.reference_absmax)

    def to_arrays(self) -> dict[str, np.ndarray]:
        paths = list(self.files)
        return {"split_labels": self.labels.astype(np.int64),
                "split_reference_top1": self.reference_top1.astype(np.int64),
                "split_reference_absmax": self.reference_absmax.astype(np.float32),
                "split_files": np.array(paths, dtype=str),
                "split_top1": np.stack([self.files[p].top1 for p in paths]).astype(np.int64),
                "split_abs_diff": np.stack([self.files[p].abs_diff for p in paths]).astype(np.float32)}

    @classmethod
    def load(cls, path: Path) -> SplitOutcomes | None:
        """The outcomes stored in a verification.npz; None for packages written before they were stored."""
        with np.load(path) as data:
            if "split_files" not in data.files:
                return None
            files = {str(p): FileOutcome(top1, diff)
                     for p, top1, diff in zip(data["split_files"], data["split_top1"], data["split_abs_diff"],
                                              strict=True)}
            return cls(data["split_labels"], data["split_reference_top1"], data["split_reference_absmax"], files)


def file_record(root: Path, rel: str) -> dict[str, Any]:
    """path, sha256, size_bytes of one package file (what the manifest stores and verify re-checks)."""
    path = root / rel
    return {"path": rel, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def checksum_problems(root: Path, record: dict[str, Any]) -> list[str]:
    path = root / record["path"]
    if not path.is_file():
        return [f"{record['path']}: missing"]
    problems = []
    size = path.stat().st_size
    if size != record["size_bytes"]:
        problems.append(f"{record['path']}: size {size} bytes, manifest says {record['size_bytes']}")
    digest = sha256_file(path)
    if digest != record["sha256"]:
        problems.append(f"{record['path']}: sha256 {digest[:12]}..., manifest says {record['sha256'][:12]}...")
    return problems


def outcome_figures(outcome: FileOutcome, labels: np.ndarray, reference_top1: np.ndarray,
                    reference_absmax: np.ndarray) -> dict[str, float]:
    """How far a file's logits are from the reference, and its accuracy, from its per-image outcomes."""
    scale = float(reference_absmax.max())
    max_diff = float(outcome.abs_diff.max())
    return {
        "max_abs_diff": max_diff,
        "logit_scale": scale,
        "relative_diff": max_diff / scale if scale > 0 else float("inf"),
        "top1_agreement": float((outcome.top1 == reference_top1).mean()),
        "accuracy": float((outcome.top1 == labels).mean()),
        "reference_accuracy": float((reference_top1 == labels).mean()),
        "images": len(labels),
    }


def parity_figures(logits: np.ndarray, vset: VerificationSet) -> dict[str, float]:
    """How far a file's logits are from the reference, and its accuracy."""
    return outcome_figures(FileOutcome.of(logits, vset), vset.labels, vset.reference.argmax(1),
                           np.abs(vset.reference).max(1))


def parity_failures(precision: str, fig: dict[str, float]) -> list[str]:
    """Which parity figures miss their gate (empty = passes)."""
    if precision in PARITY_TOLERANCE:
        budget = PARITY_TOLERANCE[precision]
        if not fig["relative_diff"] <= budget:
            return [f"{precision} max abs logit diff {fig['max_abs_diff']:.3g} = {fig['relative_diff']:.3g} x logit "
                    f"scale {fig['logit_scale']:.3g}, allowed <= {budget:g} x"]
        return []
    failures = []
    if not fig["top1_agreement"] >= INT8_MIN_AGREEMENT:
        failures.append(f"int8 top-1 agreement {fig['top1_agreement']:.2%} with the fp32 reference, "
                        f"required >= {INT8_MIN_AGREEMENT:.0%}")
    drop = fig["reference_accuracy"] - fig["accuracy"]
    if not drop <= INT8_MAX_ACCURACY_DROP + 1e-12:
        failures.append(f"int8 accuracy {fig['accuracy']:.2%} vs fp32 reference {fig['reference_accuracy']:.2%}: "
                        f"drop {drop * 100:.2f} points, allowed <= {INT8_MAX_ACCURACY_DROP * 100:g}")
    return failures


def budget_failures(fig: dict[str, float], budgets: dict[str, float | None], *,
                    latency_margin: bool = False) -> list[str]:
    """Measured latency / size / accuracy against optional budgets (None = no budget). With
    `latency_margin`, the p50 plus its spread (`latency_p50_spread_ms`) must fit the p50 budget."""
    unknown = sorted(set(budgets) - set(BUDGET_NAMES))
    if unknown:
        raise ValueError(f"budgets: unknown key(s) {unknown}; allowed: {list(GATE_BUDGETS)}")
    out = []
    contended = fig.get("latency_contended_counted",
                        fig.get("latency_contended_rounds", 0) >= fig.get("latency_rounds", 1) > 0)
    caveat = (f" (timed under contention: {fig.get('latency_contended_rounds')} of {fig.get('latency_rounds')} "
              f"rounds had the multi-thread runs much slower than 1 thread, for longer than the wait for clean "
              f"rounds; re-run on a quieter machine)") if contended else ""
    p50_limit, p95_limit = budgets.get("latency_p50_ms"), budgets.get("latency_p95_ms")
    if p50_limit is not None and "latency_p50_ms" in fig:
        spread = fig.get("latency_p50_spread_ms", 0.0) if latency_margin else 0.0
        if fig["latency_p50_ms"] + spread > p50_limit:
            with_spread = f" + spread {spread:.3f} ms" if latency_margin else ""
            out.append(f"latency p50 {fig['latency_p50_ms']:.3f} ms{with_spread} > budget {p50_limit:g} ms{caveat}")
    if p95_limit is not None and "latency_p95_ms" in fig and fig["latency_p95_ms"] > p95_limit:
        out.append(f"latency p95 {fig['latency_p95_ms']:.3f} ms > budget {p95_limit:g} ms{caveat}")
    if budgets.get("size_mb") is not None and fig["size_bytes"] / 1e6 > budgets["size_mb"]:
        out.append(f"size {fig['size_bytes'] / 1e6:.3f} MB > budget {budgets['size_mb']:g} MB")
    if budgets.get("min_accuracy") is not None and fig["accuracy"] < budgets["min_accuracy"]:
        out.append(f"accuracy {fig['accuracy']:.2%} < required {budgets['min_accuracy']:.2%}")
    return out


def check_file(root: Path, entry: dict[str, Any], vset: VerificationSet, *, threads: int = 1,
               latency_repeats: int = 200, budgets: dict[str, float | None] | None = None,
               latency_margin: bool = False,
               timing: Latency | None = None) -> tuple[dict[str, Any], FileOutcome | None]:
    """Checksums, load + run, parity, latency and budgets of one manifest file entry, in the session
    settings the entry records (`runtime_settings`; threads from `threads`). Returns the file's report and
    its per-image outcomes on `vset` (None when it did not run).

    `timing`: this very file already timed with `measure_latency` in those settings (the search's
    verified pick timed the file the package ships): its figures are checked against the budgets instead
    of timing it again."""
    records = [entry, *entry.get("extra_files", [])]
    result: dict[str, Any] = {"path": entry["path"], "format": entry["format"], "precision": entry["precision"],
                              "size_bytes": sum(r["size_bytes"] for r in records)}
    failures = [p for r in records for p in checksum_problems(root, r)]
    if failures:
        return {**result, "passed": False, "failures": failures}, None
    try:
        session = load_session(root / entry["path"], threads=threads, settings=entry.get("runtime_settings"))
        logits = session.run(vset.inputs)
    except Exception as exc:  # any runtime failure is a gate failure naming the file, not a crash
        return {**result, "passed": False, "failures": [f"does not load or run in {entry['format']}: {exc}"]}, None
    if logits.shape != vset.reference.shape:
        return {**result, "passed": False,
                "failures": [f"output shape {list(logits.shape)}, expected {list(vset.reference.shape)}"]}, None
    outcome = FileOutcome.of(logits, vset)
    result.update(outcome_figures(outcome, vset.labels, vset.reference.argmax(1), np.abs(vset.reference).max(1)))
    failures += parity_failures(entry["precision"], result)
    timed_by = "search verification (same file, same method)" if timing is not None else "gate"
    if timing is None and latency_repeats > 0:
        rounds = LATENCY_ROUNDS
        timing = measure_latency(root / entry["path"], threads, rounds=rounds,
                                 repeats=max(1, -(-latency_repeats // rounds)), settings=session.settings)
        result.update(latency_repeats=latency_repeats)
    if timing is not None:
        result.update(latency_p50_ms=timing.p50_ms, latency_p95_ms=timing.p95_ms,
                      latency_p50_spread_ms=timing.p50_spread_ms, latency_rounds=timing.rounds,
                      latency_contended_rounds=timing.contended_rounds,
                      latency_contended_counted=timing.contended_counted, latency_timed_by=timed_by, threads=threads,
                      runtime_settings=timing.settings)
    failures += budget_failures(result, budgets or {}, latency_margin=latency_margin)
    return {**result, "passed": not failures, "failures": failures}, outcome


# ---- the manifest's claims, re-derived from the package ----

@dataclass
class ManifestChecks:
    """What `manifest_failures` found: contradictions, the claims it checked, those it could not re-derive."""

    failures: list[str]
    checked: list[str]
    skipped: list[str]

    def add(self, claim: str, problems: list[str]) -> None:
        self.checked.append(claim)
        self.failures.extend(problems)

    def skip(self, claim: str, why: str) -> None:
        self.skipped.append(f"{claim}: {why}")

    def to_dict(self) -> dict[str, list[str]]:
        return {"checked": list(self.checked), "skipped": list(self.skipped)}


def _first_difference(claim: Any, derived: Any, name: str) -> str:
    """`name` (or `name.key` for the first differing key of two dicts) with both values."""
    if isinstance(claim, dict) and isinstance(derived, dict):
        for key in sorted(set(claim) | set(derived)):
            if claim.get(key) != derived.get(key):
                return f"{name}.{key}: {claim.get(key)!r}"
    return f"{name}: {claim!r}"


def _label_problems(root: Path, labels: Any, outputs: int) -> list[str]:
    if not isinstance(labels, list):
        return [f"manifest labels: {labels!r} is not a list of names"]
    problems = []
    txt = root / "labels.txt"
    lines = txt.read_text().splitlines() if txt.is_file() else None
    if lines is None:
        problems.append("manifest labels: labels.txt is missing")
    elif lines != labels:
        i = next((i for i, (a, b) in enumerate(zip(labels, lines, strict=False)) if a != b),
                 min(len(labels), len(lines)))
        problems.append(f"manifest labels: differ from labels.txt ({len(labels)} vs {len(lines)} names; index {i}: "
                        f"{labels[i] if i < len(labels) else None!r} vs {lines[i] if i < len(lines) else None!r})")
    if len(labels) != outputs:
        problems.append(f"manifest labels: {len(labels)} names, but the model has {outputs} outputs "
                        f"(the stored reference logits)")
    return problems


def _shape_problems(manifest: dict[str, Any], stored: VerificationSet) -> list[str]:
    """input.resolution / channels against the stored inputs; each file's format, layout, runtime and
    input_shape against its suffix, the FORMATS table and those inputs."""
    pre = manifest.get("input") or {}
    _, c, h, w = stored.inputs.shape
    problems = []
    if pre.get("resolution") != h or h != w:
        problems.append(f"manifest input.resolution: {pre.get('resolution')!r}, but the stored verification inputs "
                        f"are {h} x {w} px")
    if pre.get("channels") != c:
        problems.append(f"manifest input.channels: {pre.get('channels')!r}, but the stored verification inputs have "
                        f"{c} channels")
    for entry in manifest["files"]:
        path, fmt = entry["path"], entry.get("format")
        by_suffix = FILE_SUFFIX_FORMAT.get(Path(path).suffix)
        if fmt != by_suffix:
            problems.append(f"manifest files[{path}].format: {fmt!r}, but its suffix makes it {by_suffix!r}")
            continue
        spec = FORMATS[fmt]
        problems += [f"manifest files[{path}].{key}: {entry.get(key)!r}, but {fmt} files are {getattr(spec, key)!r}"
                     for key in ("layout", "runtime") if entry.get(key) != getattr(spec, key)]
        expected = [1, c, h, w] if spec.layout == "NCHW" else [1, h, w, c]
        if entry.get("input_shape") != expected:
            problems.append(f"manifest files[{path}].input_shape: {entry.get('input_shape')}, but the stored "
                            f"{c} x {h} x {w} inputs in {spec.layout} are {expected}")
    return problems


def _decoded(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def file_facts(path: Path, fmt: str) -> dict[str, Any]:
    """What a model file says about itself: its input shape, the metadata the exporter embedded (ONNX
    metadata_props, OpenVINO rt_info model_info; None for .tflite, which embeds none) and, for .tflite, its
    precision as its tensor types show it (int8 tensors: int8; float16: fp16; else fp32)."""
    if fmt == "onnx":
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        dims = proto.graph.input[0].type.tensor_type.shape.dim
        return {"input_shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims],
                "metadata": {p.key: _decoded(p.value) for p in proto.metadata_props}, "precision": None}
    if fmt == "openvino":
        from exports.runtime import import_openvino

        ov = import_openvino()

        model = ov.Core().read_model(str(path))
        shape = model.input(0).get_partial_shape()
        info = model.get_rt_info()["model_info"] if model.has_rt_info("model_info") else {}
        metadata = {key: _decoded(value.astype(str)) for key, value in info.items()}
        return {"input_shape": [d.get_length() if d.is_static else str(d) for d in shape], "metadata": metadata,
                "precision": None}
    from exports.runtime import _litert

    interpreter = _litert()[0](model_path=str(path))
    dtypes = {np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()}
    precision = "int8" if dtypes & {np.dtype(np.int8), np.dtype(np.uint8)} else (
        "fp16" if np.dtype(np.float16) in dtypes else "fp32")
    return {"input_shape": [int(d) for d in interpreter.get_input_details()[0]["shape"]], "metadata": None,
            "precision": precision}


EMBEDDED_PACKAGE_KEYS = ("labels", "input", "arch")  # manifest-level fields the exporter embeds in each file
EMBEDDED_FILE_KEYS = ("precision", "layout")  # file-entry fields it embeds


def _file_fact_problems(root: Path, manifest: dict[str, Any], entry: dict[str, Any],
                        checks: ManifestChecks) -> list[str]:
    path, fmt = entry["path"], entry["format"]
    try:
        facts = file_facts(root / path, fmt)
    except Exception as exc:  # a file its runtime ran but whose description cannot be read: say so, no crash
        return [f"manifest files[{path}]: the file's input shape / metadata cannot be read ({exc})"]
    problems = []
    if facts["input_shape"] != entry.get("input_shape"):
        problems.append(f"manifest files[{path}].input_shape: {entry.get('input_shape')}, but the file's input is "
                        f"{facts['input_shape']}")
    if facts["precision"] is not None and facts["precision"] != entry.get("precision"):
        problems.append(f"manifest files[{path}].precision: {entry.get('precision')!r}, but the file's tensor types "
                        f"make it {facts['precision']}")
    metadata = facts["metadata"]
    if metadata is None:
        return problems
    claims = {**{k: manifest.get(k) for k in EMBEDDED_PACKAGE_KEYS}, **{k: entry.get(k) for k in EMBEDDED_FILE_KEYS}}
    for key, claim in claims.items():
        name = key if key in EMBEDDED_PACKAGE_KEYS else f"files[{path}].{key}"
        if key not in metadata:
            checks.skip(f"manifest {name} vs {path}", "the file embeds no such metadata")
        elif metadata[key] != claim:
            problems.append(f"manifest {_first_difference(claim, metadata[key], name)}, but {path} embeds "
                            f"{_first_difference(metadata[key], claim, key).split(': ', 1)[1]}")
    return problems


def _preprocessing_problems(pre: dict[str, Any], stored: VerificationSet) -> list[str]:
    """The stored raw images preprocessed as the manifest says (scale, bilinear antialiased resize to the
    stored inputs' size, mean, std) must give the stored inputs; if not, the mean and std that the stored
    inputs were made with are fitted per channel and the differing field is named."""
    assert stored.images is not None  # the caller skips packages without raw images
    try:
        scale = float(pre["scale"])
        mean = np.asarray(pre["mean"], dtype=np.float64).reshape(1, -1, 1, 1)
        std = np.asarray(pre["std"], dtype=np.float64).reshape(1, -1, 1, 1)
    except (KeyError, TypeError, ValueError) as exc:
        return [f"manifest input: scale / mean / std unreadable ({exc!r})"]
    size = stored.inputs.shape[-2:]
    x = stored.images.astype(np.float32) * np.float32(scale)
    if x.shape[-2:] != size:
        import torch
        import torch.nn.functional as F

        x = F.interpolate(torch.from_numpy(x), size=tuple(size), mode="bilinear", align_corners=False,
                          antialias=True).numpy()
    if mean.shape[1] != x.shape[1] or std.shape[1] != x.shape[1]:
        return [f"manifest input.mean/std: {mean.shape[1]}/{std.shape[1]} values for {x.shape[1]} channels"]
    worst = float(np.abs((x - mean) / std - stored.inputs).max())
    if worst <= PREPROCESS_TOLERANCE:
        return []
    fitted = [np.polyfit(x[:, ch].ravel(), stored.inputs[:, ch].ravel(), 1) if np.ptp(x[:, ch]) > 0 else None
              for ch in range(x.shape[1])]
    problems = []
    if all(f is not None for f in fitted):
        true_std = np.array([1 / a for a, _ in fitted])
        true_mean = np.array([-b / a for a, b in fitted])
        for name, claim, derived in (("mean", mean.ravel(), true_mean), ("std", std.ravel(), true_std)):
            if not np.allclose(claim, derived, rtol=1e-3, atol=1e-4):
                problems.append(f"manifest input.{name}: {[round(float(v), 6) for v in claim]}, but the stored inputs "
                                f"were made from the stored raw images with {name} "
                                f"{[round(float(v), 6) for v in derived]} (at input.scale {scale:g})")
    return problems or [f"manifest input: the stored raw images preprocessed as it says (scale, resize, mean, std) "
                        f"differ from the stored inputs by up to {worst:.3g}"]


def _arch_problems(manifest: dict[str, Any], checks: ManifestChecks) -> list[str]:
    arch = manifest.get("arch")
    if arch is None:
        return [] if manifest.get("ofa_arch") is None else ["manifest ofa_arch: set, but arch is null"]
    try:
        config = ArchConfig.from_dict(arch)
    except (TypeError, ValueError, KeyError) as exc:
        return [f"manifest arch: not a sub-network config ({exc})"]
    problems = []
    if "ofa_arch" in manifest and manifest["ofa_arch"] != config.to_ofa_dict():
        problems.append(f"manifest {_first_difference(manifest['ofa_arch'], config.to_ofa_dict(), 'ofa_arch')}, "
                        f"but arch makes it {config.to_ofa_dict()}")
    metrics = manifest.get("metrics") or {}
    space = ((manifest.get("lineage") or {}).get("space")) or {}
    if not {"phi", "width"} <= set(space):
        checks.skip("metrics.macs/params/peak_activation_bytes", "the manifest records the space by name only "
                    "(lineage.space has no phi / width), so its cost tables cannot be rebuilt")
        return problems
    checks.checked.append("metrics.macs/params/peak_activation_bytes")
    try:
        derived = cost(space_from_record(space), config, len(manifest.get("labels") or [])).to_dict()
    except (KeyError, ValueError) as exc:
        return [*problems, f"manifest lineage.space / arch: cost not computable ({exc})"]
    problems += [f"manifest metrics.{key}: {metrics[key]}, but arch {key} in space {space.get('name')!r} is "
                 f"{derived[key]}" for key in derived if key in metrics and metrics[key] != derived[key]]
    return problems


def _close(claim: Any, derived: float) -> bool:
    return isinstance(claim, int | float) and math.isclose(claim, derived, rel_tol=CLAIM_RTOL, abs_tol=1e-12)


def _metric_problems(manifest: dict[str, Any], results: list[dict[str, Any]], stored: VerificationSet,
                     outcomes: SplitOutcomes | None, rerun: dict[str, FileOutcome] | None,
                     checks: ManifestChecks) -> list[str]:
    """metrics.* against the files (sizes) and the per-image outcomes stored at export (accuracy, agreement,
    logit differences on the whole validation split); those outcomes against what each file computes now
    on the stored images."""
    metrics = manifest.get("metrics") or {}
    claimed = metrics.get("files")
    if not isinstance(claimed, dict):
        checks.skip("metrics.files", "absent (the manifest is being written: export time)")
        return []
    problems = []
    for r in results:
        claim = (claimed.get(r["path"]) or {}).get("size_bytes")
        if claim != r["size_bytes"]:
            problems.append(f"manifest metrics.files[{r['path']}].size_bytes: {claim}, but the file(s) hold "
                            f"{r['size_bytes']} bytes")
    checks.checked.append("metrics.files[*].size_bytes")
    if outcomes is None:
        checks.skip("metrics.files[*].accuracy/top1_agreement/max_abs_diff/relative_diff, metrics.reference_accuracy, "
                    "metrics.validation_images", "verification.npz holds no per-image outcomes (package written "
                    "before they were stored)")
        return problems
    checks.checked.append("metrics.files[*].accuracy/top1_agreement/max_abs_diff/relative_diff, "
                          "metrics.reference_accuracy, metrics.validation_images")
    n, m = len(stored.labels), len(outcomes.labels)
    if not (np.array_equal(outcomes.labels[:n], stored.labels)
            and np.array_equal(outcomes.reference_top1[:n], stored.reference.argmax(1))):
        problems.append("verification.npz: its split outcomes do not start with the stored images")
    if set(outcomes.files) != set(claimed):
        problems.append(f"manifest metrics.files: {sorted(claimed)}, but verification.npz has outcomes for "
                        f"{sorted(outcomes.files)}")
    if metrics.get("validation_images") != m:
        problems.append(f"manifest metrics.validation_images: {metrics.get('validation_images')}, but the stored "
                        f"outcomes cover {m} images")
    reference_accuracy = float((outcomes.reference_top1 == outcomes.labels).mean())
    if not _close(metrics.get("reference_accuracy"), reference_accuracy):
        problems.append(f"manifest metrics.reference_accuracy: {metrics.get('reference_accuracy')}, but the stored "
                        f"outcomes give {reference_accuracy} on {m} images")
    precisions = {e["path"]: e.get("precision") for e in manifest["files"]}
    for path in sorted(set(outcomes.files) & set(claimed)):
        derived = outcomes.figures(path)
        for key in ("accuracy", "top1_agreement", "max_abs_diff", "relative_diff"):
            if not _close(claimed[path].get(key), derived[key]):
                problems.append(f"manifest metrics.files[{path}].{key}: {claimed[path].get(key)}, but the stored "
                                f"per-image outcomes give {derived[key]:.6g} on {m} images")
        if rerun is not None and path in rerun:
            flipped = int((rerun[path].top1 != outcomes.files[path].top1[:n]).sum())
            slack = 1 - INT8_MIN_AGREEMENT if precisions.get(path) == "int8" else FLOAT_RERUN_SLACK
            if flipped > slack * n:
                problems.append(f"verification.npz split_top1[{path}]: the file now predicts another class than "
                                f"recorded at export on {flipped} of the {n} stored images (allowed {slack:.0%})")
    return problems


def _test_block_problems(test: Any) -> list[str]:
    """metrics.test (test-split accuracy; its images do not ship): each estimate must be consistent in itself."""
    if not isinstance(test, dict):
        return []
    estimates = {"pytorch": test.get("pytorch"), **{f"files[{p}]": e for p, e in (test.get("files") or {}).items()}}
    problems = []
    for name, est in estimates.items():
        try:
            correct, images = int(est["correct"]), int(est["images"])
            value, ci95 = est["value"], list(est["ci95"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"manifest metrics.test.{name}: not an estimate (correct, images, value, ci95)")
            continue
        if images != test.get("images") or not _close(value, correct / images if images else float("nan")):
            problems.append(f"manifest metrics.test.{name}.value: {value}, but correct / images = "
                            f"{correct} / {images} (test images: {test.get('images')})")
        low, high = wilson_interval(correct, images)
        if not (_close(ci95[0], low) and _close(ci95[1], high)):
            problems.append(f"manifest metrics.test.{name}.ci95: {ci95}, but the Wilson interval of {correct} / "
                            f"{images} is [{low:.6g}, {high:.6g}]")
    return problems


def manifest_failures(root: Path, manifest: dict[str, Any], stored: VerificationSet, results: list[dict[str, Any]],
                      outcomes: SplitOutcomes | None, rerun: dict[str, FileOutcome] | None) -> ManifestChecks:
    """Every manifest claim that the package itself can re-derive, against what it re-derives (see the module
    docstring). `results`: check_file's reports; `rerun`: the per-image outcomes of each file on the stored
    images, now (None when the gate ran on another set)."""
    checks = ManifestChecks([], [], [])
    checks.add("labels (labels.txt, number of outputs)",
               _label_problems(root, manifest.get("labels"), stored.reference.shape[1]))
    checks.add("input.resolution, input.channels, files[*].format/layout/runtime/input_shape",
               _shape_problems(manifest, stored))
    if manifest.get("verification", {}).get("images") != len(stored.labels):
        checks.failures.append(f"manifest verification.images: {manifest['verification'].get('images')}, but "
                               f"verification.npz holds {len(stored.labels)}")
    if stored.images is None:
        checks.skip("input.mean/std/scale vs the stored images", "verification.npz holds no raw images (package "
                    "written before they were stored, or by an exporter that had none)")
    else:
        checks.add("input.mean/std/scale (stored raw images preprocessed again)",
                   _preprocessing_problems(manifest.get("input") or {}, stored))
    ran = {r["path"] for r in results if "accuracy" in r}  # the others failed their checksum or did not run
    for entry in manifest["files"]:
        if entry["path"] not in ran or entry.get("format") != FILE_SUFFIX_FORMAT.get(Path(entry["path"]).suffix):
            continue  # refused already (checksum, does not run, or a format its suffix contradicts)
        checks.add(f"files[{entry['path']}]: input_shape and precision vs the file itself; labels, input, arch, "
                   f"precision, layout vs its embedded metadata (ONNX, OpenVINO)",
                   _file_fact_problems(root, manifest, entry, checks))
    checks.add("ofa_arch (from arch)", _arch_problems(manifest, checks))
    checks.failures.extend(_metric_problems(manifest, results, stored, outcomes, rerun, checks))
    if isinstance((manifest.get("metrics") or {}).get("test"), dict):
        checks.add("metrics.test (each estimate's value and ci95 from its counts)",
                   _test_block_problems(manifest["metrics"]["test"]))
    else:
        checks.skip("metrics.test", "absent")
    checks.skip("metrics.files[*].latency_*", "machine-dependent: verify re-times each file against the budgets "
                "instead")
    checks.skip("metrics.test accuracy itself, verification.budgets, target, lineage, versions, created, name",
                "not derivable from the package (provenance; a signature covers them)")
    return checks


def read_manifest(package: Path) -> dict[str, Any]:
    path = Path(package) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{path}: not found; is {package} a package folder written by `factory export`?")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    for key in ("schema_version", "files", "verification"):
        if key not in manifest:
            raise ValueError(f"{path}: missing key {key!r}")
    return manifest


@dataclass(frozen=True)
class GateResult:
    """A package the gate passed: the report (plain JSON-able data) and every file's per-image outcomes on
    the set the gate ran on (what the exporter stores so that `factory verify` can re-derive the figures)."""

    report: dict[str, Any]
    outcomes: SplitOutcomes


def run_gate(package: Path, *, budgets: dict[str, float | None] | None = None, threads: int | None = None,
             latency_repeats: int = 200, vset: VerificationSet | None = None, latency_margin: bool = False,
             timings: dict[str, Latency] | None = None, public_key: Path | None = None) -> GateResult:
    """`verify_package`, also returning the files' per-image outcomes (the exporter stores them)."""
    root = Path(package)
    if public_key is not None:
        from exports.signing import signature_failures

        problems = signature_failures(root, Path(public_key))
        if problems:
            report = {"package": str(root), "passed": False, "failures": problems, "files": []}
            raise VerificationFailed(f"{root}: signature check failed: " + "; ".join(problems), report)
    manifest = read_manifest(root)
    vrec = manifest["verification"]
    budgets = budgets if budgets is not None else (vrec.get("budgets") or {})
    threads = threads or int(manifest.get("metrics", {}).get("threads") or 1)
    problems = checksum_problems(root, vrec)
    report: dict[str, Any] = {"package": str(root), "threads": threads, "budgets": budgets, "files": []}
    if problems:
        report.update(passed=False, failures=problems)
        raise VerificationFailed(f"{root}: {problems[0]}", report)
    stored = VerificationSet.load(root / vrec["path"])
    gate_set = stored if vset is None else vset
    outcomes: dict[str, FileOutcome] = {}
    for entry in manifest["files"]:
        result, outcome = check_file(root, entry, gate_set, threads=threads, latency_repeats=latency_repeats,
                                     budgets=budgets, latency_margin=latency_margin,
                                     timing=(timings or {}).get(entry["path"]))
        report["files"].append(result)
        if outcome is not None:
            outcomes[entry["path"]] = outcome
    checks = manifest_failures(root, manifest, stored, report["files"], SplitOutcomes.load(root / vrec["path"]),
                               outcomes if gate_set is stored else None)
    failures = checks.failures + [f"{f['path']}: {msg}" for f in report["files"] for msg in f["failures"]]
    report.update(passed=not failures, failures=failures, images=len(gate_set.labels),
                  reference_accuracy=gate_set.reference_accuracy, manifest_checks=checks.to_dict())
    if failures:
        raise VerificationFailed("verification failed: " + "; ".join(failures), report)
    return GateResult(report, SplitOutcomes.of(gate_set, outcomes))


def verify_package(package: Path, *, budgets: dict[str, float | None] | None = None, threads: int | None = None,
                   latency_repeats: int = 200, vset: VerificationSet | None = None,
                   latency_margin: bool = False,
                   timings: dict[str, Latency] | None = None, public_key: Path | None = None) -> dict[str, Any]:
    """Run the gate on a package folder. Returns the report; raises VerificationFailed naming each failure.

    `budgets` default to those recorded at export (manifest verification.budgets); `threads` to the
    manifest's; `vset` (e.g. the full validation split at export time) to the set stored in the package;
    `public_key`: the package must carry a model-signing signature (model.sig) made with the matching
    private key over its present content, checked first (a rewritten manifest cannot hide a changed
    file). `latency_margin`: the p50 must fit its budget with its spread (the export gate). `timings`: manifest
    file path -> that file's latency measured before (see `check_file`); every other check still runs.
    The manifest's claims are checked against what the package re-derives (`manifest_failures`); the report's
    `manifest_checks` lists the claims checked and those skipped, with why.
    """
    return run_gate(package, budgets=budgets, threads=threads, latency_repeats=latency_repeats, vset=vset,
                    latency_margin=latency_margin, timings=timings, public_key=public_key).report
