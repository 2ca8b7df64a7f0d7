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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exports.budgets import BUDGET_NAMES, GATE_BUDGETS
from exports.files import sha256_file
from exports.runtime import load_session
from exports.timing import Latency, measure_latency

MANIFEST = "manifest.json"
VERIFICATION_FILE = "verification.npz"
# relative logit budgets per precision (fraction of the logit scale)
PARITY_TOLERANCE: dict[str, float] = {"fp32": 1e-4, "fp16": 1e-2}
INT8_MIN_AGREEMENT = 0.98
INT8_MAX_ACCURACY_DROP = 0.01
LATENCY_ROUNDS = 3  # latency_repeats are split into this many rounds (exports.timing.measure_latency)


class VerificationFailed(Exception):
    """The gate refused a package. `report` holds every figure; the message names what failed."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class VerificationSet:
    """Preprocessed validation images (N, C, r, r) float32 NCHW, labels (N,), PyTorch logits (N, K)."""

    inputs: np.ndarray
    labels: np.ndarray
    reference: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.inputs)
        if n == 0 or len(self.labels) != n or len(self.reference) != n:
            raise ValueError(f"verification set: inputs/labels/reference lengths differ or are 0: "
                             f"{len(self.inputs)}/{len(self.labels)}/{len(self.reference)}")

    @property
    def reference_accuracy(self) -> float:
        return float((self.reference.argmax(1) == self.labels).mean())

    def head(self, n: int) -> VerificationSet:
        return VerificationSet(self.inputs[:n], self.labels[:n], self.reference[:n])

    def save(self, path: Path) -> None:
        np.savez_compressed(path, inputs=self.inputs.astype(np.float32), labels=self.labels.astype(np.int64),
                            reference=self.reference.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> VerificationSet:
        with np.load(path) as data:
            return cls(data["inputs"], data["labels"], data["reference"])


def file_record(root: Path, rel: str) -> dict[str, Any]:
    """path, sha256, size_bytes of one package file (what the manifest stores and verify re-checks)."""
    path = root / rel
    return {"path": rel, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def _checksum_problems(root: Path, record: dict[str, Any]) -> list[str]:
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


def parity_figures(logits: np.ndarray, vset: VerificationSet) -> dict[str, float]:
    """How far a file's logits are from the reference, and its accuracy."""
    scale = float(np.abs(vset.reference).max())
    max_diff = float(np.abs(logits - vset.reference).max())
    return {
        "max_abs_diff": max_diff,
        "logit_scale": scale,
        "relative_diff": max_diff / scale if scale > 0 else float("inf"),
        "top1_agreement": float((logits.argmax(1) == vset.reference.argmax(1)).mean()),
        "accuracy": float((logits.argmax(1) == vset.labels).mean()),
        "reference_accuracy": vset.reference_accuracy,
        "images": len(vset.labels),
    }


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
    contended = fig.get("latency_contended_rounds", 0) >= fig.get("latency_rounds", 1) > 0
    caveat = (f" (timed under contention: all {fig.get('latency_rounds')} rounds slowed by another tenant; "
              f"re-run on a quieter machine)") if contended else ""
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
               latency_margin: bool = False, timing: Latency | None = None) -> dict[str, Any]:
    """Checksums, load + run, parity, latency and budgets of one manifest file entry, in the session
    settings the entry records (`runtime_settings`; threads from `threads`).

    `timing`: this very file already timed with `measure_latency` in those settings (the search's
    verified pick timed the file the package ships): its figures are checked against the budgets instead
    of timing it again."""
    records = [entry, *entry.get("extra_files", [])]
    result: dict[str, Any] = {"path": entry["path"], "format": entry["format"], "precision": entry["precision"],
                              "size_bytes": sum(r["size_bytes"] for r in records)}
    failures = [p for r in records for p in _checksum_problems(root, r)]
    if failures:
        return {**result, "passed": False, "failures": failures}
    try:
        session = load_session(root / entry["path"], threads=threads, settings=entry.get("runtime_settings"))
        logits = session.run(vset.inputs)
    except Exception as exc:  # any runtime failure is a gate failure naming the file, not a crash
        return {**result, "passed": False, "failures": [f"does not load or run in {entry['format']}: {exc}"]}
    if logits.shape != vset.reference.shape:
        return {**result, "passed": False,
                "failures": [f"output shape {list(logits.shape)}, expected {list(vset.reference.shape)}"]}
    result.update(parity_figures(logits, vset))
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
                      latency_contended_rounds=timing.contended_rounds, latency_timed_by=timed_by, threads=threads,
                      runtime_settings=timing.settings)
    failures += budget_failures(result, budgets or {}, latency_margin=latency_margin)
    return {**result, "passed": not failures, "failures": failures}


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
    """
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
    problems = _checksum_problems(root, vrec)
    report: dict[str, Any] = {"package": str(root), "threads": threads, "budgets": budgets, "files": []}
    if problems:
        report.update(passed=False, failures=problems)
        raise VerificationFailed(f"{root}: {problems[0]}", report)
    vset = vset or VerificationSet.load(root / vrec["path"])
    for entry in manifest["files"]:
        report["files"].append(check_file(root, entry, vset, threads=threads, latency_repeats=latency_repeats,
                                          budgets=budgets, latency_margin=latency_margin,
                                          timing=(timings or {}).get(entry["path"])))
    failures = [f"{f['path']}: {msg}" for f in report["files"] for msg in f["failures"]]
    report.update(passed=not failures, failures=failures, images=len(vset.labels),
                  reference_accuracy=vset.reference_accuracy)
    if failures:
        raise VerificationFailed("verification failed: " + "; ".join(failures), report)
    return report
