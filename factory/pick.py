"""The verified pick: check the top predicted candidates for real before one is chosen.

Predictions can be wrong (the accuracy predictor has a rank correlation, not a guarantee; the
latency table is a sum of blocks). So the few most accurate feasible candidates of the front are
measured: BN-recalibrated accuracy on the validation split (`factory.evaluate.evaluate_arch`) and
p50/p95 latency of the *exported file* in the target's runtime, precision and threads
(`exports.convert` + `exports.runtime.time_session`), interleaved over rounds (median of medians,
because another tenant can shift one batch of runs by 40%). The most accurate candidate that meets
every budget when measured is chosen; if none of a batch does, the next batch is measured, up to
`max_checks`. A misprediction therefore never ships.

Not measured: peak memory (the latency model's estimate is used and said so); for a target whose
table was imported from another device, latency (this machine is not that device: predicted figures
are used and said so). Accuracy is PyTorch fp32; the export gate checks the exported file's accuracy.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from factory.errors import InfeasibleTargetError
from factory.search import Budgets, Candidate, Measurement, SearchResult, arch_label
from supernets.arch import ArchConfig


@dataclass(frozen=True)
class VerifyConfig:
    top: int = 3  # candidates measured per batch
    max_checks: int = 9  # give up (InfeasibleTargetError) after measuring this many
    rounds: int = 3  # interleaved timing rounds
    warmup: int = 20
    repeats: int = 100
    calibration_images: int = 64  # int8 calibration for the export


def _dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def measure_candidates(run: Any, profile: Any, archs: Sequence[ArchConfig], predicted_memory: Sequence[float],
                       config: VerifyConfig, workdir: Path) -> list[Measurement]:
    """Measure accuracy (PyTorch, BN recalibrated) and exported-file latency/size of each arch."""
    from exports.convert import convert
    from exports.runtime import load_session, time_session
    from factory.data import to_model_input
    from factory.evaluate import calibrated_subnet, evaluate_arch

    ds = run.dataset()
    accs, sizes, sessions, inputs = [], [], [], []
    for i, arch in enumerate(archs):
        accs.append(evaluate_arch(run, arch).accuracy)
        model = calibrated_subnet(run, arch)
        calib = to_model_input(ds.calib.images[: config.calibration_images], arch.resolution, run.mean, run.std)
        out = workdir / f"candidate{i}"
        path = convert(model, profile.format, profile.precision, out, resolution=arch.resolution,
                       calibration=calib.numpy() if profile.precision == "int8" else None)
        sizes.append(_dir_size_mb(out))
        if profile.measurable_here:
            sessions.append(load_session(path, threads=profile.threads))
            inputs.append(to_model_input(ds.val.images[:1], arch.resolution, run.mean, run.std).numpy())
    p50s: list[list[float]] = [[] for _ in archs]
    p95s: list[list[float]] = [[] for _ in archs]
    for _ in range(config.rounds if sessions else 0):
        for i, (sess, x) in enumerate(zip(sessions, inputs, strict=True)):
            t = time_session(sess, x, warmup=config.warmup, repeats=config.repeats)
            p50s[i].append(t.p50_ms)
            p95s[i].append(t.p95_ms)
    out_list = []
    for i in range(len(archs)):
        notes = ["peak memory: estimate of the latency model (not measured)"]
        if sessions:
            p50, p95 = statistics.median(p50s[i]), statistics.median(p95s[i])
        else:
            p50 = p95 = float("nan")
            notes.append("latency: not measurable on this machine (imported table); predicted figures apply")
        out_list.append(Measurement(accs[i], p50, p95, sizes[i], predicted_memory[i], "; ".join(notes)))
    return out_list


def _measured_checks(budgets: Budgets, cand: Candidate, m: Measurement) -> dict:
    """Budgets against measured figures, falling back to predictions for what was not measured."""
    checks = {}
    for name, miss in budgets.check(cand.predicted).items():
        value = m.value(name)
        checks[name] = replace(miss, value=value) if value == value else miss  # NaN -> keep predicted
    return checks


def verify_pick(run: Any, profile: Any, result: SearchResult, config: VerifyConfig = VerifyConfig(),
                workdir: Path | None = None) -> SearchResult:
    """Measure the most accurate feasible candidates in batches of `config.top`; choose the most
    accurate one that meets every budget when measured. InfeasibleTargetError if none of
    `config.max_checks` does."""
    queue = result.feasible
    checked: list[Candidate] = []
    with tempfile.TemporaryDirectory(prefix="factory-verify-", dir=workdir) as tmp:
        while queue and len(checked) < config.max_checks:
            batch, queue = queue[: config.top], queue[config.top :]
            batch = batch[: config.max_checks - len(checked)]
            ms = measure_candidates(run, profile, [c.arch for c in batch], [c.predicted.peak_memory_mb for c in batch],
                                    config, Path(tmp) / f"batch{len(checked)}")
            done = [replace(c, measured=m, measured_checks=_measured_checks(result.budgets, c, m))
                    for c, m in zip(batch, ms, strict=True)]
            checked.extend(done)
            passing = [c for c in done if c.passes_measured]
            if passing:
                chosen = max(passing, key=lambda c: (c.measured.accuracy, -c.measured.latency_p50_ms))  # type: ignore[union-attr]
                return replace(result, chosen=chosen, checked=checked)
    worst = "; ".join(f"{arch_label(c.arch)}: " + ", ".join(
        m.describe() for m in (c.measured_checks or {}).values() if m.excess > 0) for c in checked)
    raise InfeasibleTargetError(
        f"target {profile.name!r}: {len(checked)} candidate(s) predicted to meet every budget were measured "
        f"and none does ({worst or 'no feasible candidate'}); the predictions are optimistic for this target: "
        f"re-measure its latency table or relax the budgets")

