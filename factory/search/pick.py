"""The verified pick: check the top predicted candidates for real before one is chosen.

Predictions can be wrong (the accuracy predictor has a rank correlation, not a guarantee; the
latency table is a sum of blocks). So the few most accurate feasible candidates of the front are
measured: BN-recalibrated accuracy on the validation split (`factory.evaluate.evaluate_arch`, ~1 s)
for a batch of `top`, then, most accurate first, the *exported file* in the target's runtime,
precision and threads (`factory.prepared` + `exports.timing.measure_latency`, the method of the
tables and the gate) until one meets every budget: that one is the pick (the most accurate of the
batch that passes). Exports are the slow part, so they stop at the first pass. When a measured
figure exceeds its prediction, the ratio measured/predicted is learnt and the remaining queue is
filtered with the corrected predictions, so the next batch is not the same near-identical candidates
failing the same way. After `max_checks` exports without a pass: InfeasibleTargetError. A
misprediction never ships.

The pick's work travels on (`VerifiedPick`): its calibrated network, its converted file (converted
exactly as a package converts it) and that file's latency go to the package writer, which copies the
file instead of converting it again.

Not measured: peak memory (the latency model's estimate is used and said so); for a target whose
table was imported from another device, latency (this machine is not that device: predicted figures
are used and said so). Accuracy is PyTorch fp32; the export gate checks the exported file's accuracy.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from factory.errors import InfeasibleTargetError
from factory.search.engine import Candidate, Measurement, Prediction, SearchResult, arch_label, check_budgets
from supernets.arch import ArchConfig

if TYPE_CHECKING:
    from exports.budgets import Constraints
    from exports.timing import Latency
    from factory.prepared import PreparedSubnet
    from factory.run import Run
    from targets.profile import TargetProfile


@dataclass(frozen=True)
class VerifyConfig:
    top: int = 3  # candidates whose accuracy is measured per batch
    max_checks: int = 6  # exports before giving up (InfeasibleTargetError)
    rounds: int = 3  # timing rounds (exports.timing: p50 / p95 of all runs, spread = slowest round's median - p50)
    warmup: int = 20
    repeats: int = 100


_CORRECTED = ("latency_p50_ms", "latency_p95_ms", "size_mb")  # figures whose prediction error is learnt


@dataclass(frozen=True)
class ExportCheck:
    """One candidate converted for the target and timed: the file lives in `folder` (package layout)."""

    prepared: PreparedSubnet
    folder: Path
    size_mb: float
    latency: Latency | None  # None when the target's latency is not measurable on this machine
    path: Path | None = None  # the converted model file in `folder`

    @property
    def p50_p95(self) -> tuple[float, float]:
        return (float("nan"),) * 2 if self.latency is None else (self.latency.p50_ms, self.latency.p95_ms)


@dataclass(frozen=True)
class VerifiedPick:
    """The verified pick and the work its verification did, handed to the package writer.

    `result.chosen` is the pick with its predicted and measured figures; `check` holds the calibrated
    static network (and int8 calibration images) the file was converted from, the converted file of the
    target's format and its latency. The file's folder outlives the verification: it is removed by
    `close()` (or leaving a `with` block) once the package is written."""

    result: SearchResult
    fmt: str
    check: ExportCheck
    _root: Path = field(repr=False)  # the verification's temporary folder, `check.folder` inside it

    @property
    def chosen(self) -> Candidate:
        assert self.result.chosen is not None  # set by verify_pick
        return self.result.chosen

    @property
    def predicted(self) -> Prediction:
        return self.chosen.predicted

    @property
    def measured(self) -> Measurement:
        assert self.chosen.measured is not None  # set by verify_pick
        return self.chosen.measured

    @property
    def files(self) -> dict[str, Path]:
        """Format -> folder of its converted files (what `exports.package.PackageRequest.converted` takes)."""
        return {self.fmt: self.check.folder}

    @property
    def timings(self) -> dict[str, Latency]:
        """Format -> the latency of its converted file (`PackageRequest.timings`); empty when not measured."""
        return {} if self.check.latency is None else {self.fmt: self.check.latency}

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> VerifiedPick:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def measure_export(profile: TargetProfile, prepared: PreparedSubnet, config: VerifyConfig,
                   out: Path) -> ExportCheck:
    """`prepared` converted for `profile` into `out` (as a package converts it) and timed there, once,
    with `exports.timing.measure_latency`, as the export gate times it (contended rounds of a multi-thread
    target set aside; a .tflite file in the faster of its kernels, which the package then ships)."""
    from exports.timing import measure_latency

    path = prepared.convert(profile.format, out)
    if not profile.measurable_here:
        return ExportCheck(prepared, out, _dir_size_mb(out), None, path)
    timing = measure_latency(path, profile.threads, rounds=config.rounds, warmup=config.warmup,
                             repeats=config.repeats)
    return ExportCheck(prepared, out, _dir_size_mb(out), timing, path)


def int8_gate_failures(run: Run, check: ExportCheck, threads: int) -> list[str]:
    """The export gate's int8 criteria (top-1 agreement with the fp32 network, accuracy drop, on the whole
    validation split) on a candidate's converted file, in the kernel settings its timing chose: a candidate
    the package gate would refuse is passed over here, and the next one is tried."""
    from exports.runtime import load_session
    from exports.verify import parity_failures, parity_figures
    from factory.ship.export import validation_set

    assert check.path is not None
    vset = validation_set(run, check.prepared)
    settings = None if check.latency is None else check.latency.settings
    logits = load_session(check.path, threads=threads, settings=settings).run(vset.inputs)
    return parity_failures("int8", parity_figures(logits, vset))


def _measured_checks(budgets: Constraints, cand: Candidate, m: Measurement) -> dict:
    """Budgets against measured figures, falling back to predictions for what was not measured. The p50
    must fit with its run-to-run spread (`Measurement.checked_value`)."""
    checks = {}
    for name, miss in check_budgets(budgets, cand.predicted).items():
        value = m.checked_value(name)
        checks[name] = replace(miss, value=value) if value == value else miss  # NaN -> keep predicted
    return checks


def _still_feasible(c: Candidate, budgets: Constraints, ratios: dict[str, float]) -> bool:
    """Does `c` meet the budgets once its predictions are scaled by the learnt measured/predicted ratios?"""
    return all(c.predicted.value(name) * ratios.get(name, 1.0) <= budget
               for name, budget in budgets.items() if name in _CORRECTED)


@dataclass
class _Verification:
    """The state of one verification: accuracies (known or measured here), the learnt measured/predicted
    ratios, and the candidates exported so far (each in its own folder under `root`)."""

    run: Run
    profile: TargetProfile
    budgets: Constraints
    config: VerifyConfig
    root: Path
    known_acc: dict[ArchConfig, float]
    accs: dict[ArchConfig, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    checked: list[Candidate] = field(default_factory=list)
    measured_here: int = 0
    refused: dict[ArchConfig, list[str]] = field(default_factory=dict)  # met the budgets, failed the int8 gate
    prepared: dict[ArchConfig, PreparedSubnet] = field(default_factory=dict)

    def prepare(self, arch: ArchConfig) -> PreparedSubnet:
        """The one BN recalibration + extraction of `arch`: its accuracy and its file both come from it."""
        from factory.prepared import prepare_subnet

        k = self.run.space.canonical(arch)
        if k not in self.prepared:
            self.prepared[k] = prepare_subnet(self.run, arch, self.profile.precision)
        return self.prepared[k]

    def accuracy(self, c: Candidate) -> float:
        from factory.evaluate import static_accuracy

        k = self.run.space.canonical(c.arch)
        if k not in self.accs:
            if k in self.known_acc:
                self.accs[k] = self.known_acc[k]
            else:
                self.accs[k] = static_accuracy(self.prepare(c.arch).model, self.run.dataset().val, c.arch.resolution,
                                               self.run.mean, self.run.std)
                self.measured_here += 1
        return self.accs[k]

    def worth_exporting(self, c: Candidate) -> bool:
        """Not when it already fails the accuracy budget, nor when an earlier export showed the predictions
        are optimistic by more than its margin."""
        acc, floor = self.accuracy(c), self.budgets.min_accuracy
        return (floor is None or acc >= floor) and _still_feasible(c, self.budgets, self.ratios)

    def export(self, c: Candidate) -> tuple[Candidate, ExportCheck]:
        """Convert and time `c`, record it as checked, learn the measured/predicted ratios."""
        check = measure_export(self.profile, self.prepare(c.arch), self.config,
                               self.root / f"c{len(self.checked)}")
        p50, p95 = check.p50_p95
        spread = 0.0 if check.latency is None else check.latency.p50_spread_ms
        m = Measurement(self.accuracy(c), p50, p95, check.size_mb, c.predicted.peak_memory_mb, _notes(self.profile),
                        latency_p50_spread_ms=spread)
        done = replace(c, measured=m, measured_checks=_measured_checks(self.budgets, c, m))
        self.checked.append(done)
        for name in _CORRECTED:
            pred, got = c.predicted.value(name), m.value(name)
            if pred > 0 and got == got:
                self.ratios[name] = max(self.ratios.get(name, 1.0), got / pred)
        return done, check

    def batches(self, queue: list[Candidate], extra: list[Candidate]) -> Iterator[list[Candidate]]:
        """Batches of `top` candidates, most accurate first, re-filtered by what the exports taught."""
        while (queue or extra) and len(self.checked) < self.config.max_checks:
            queue = [c for c in queue if _still_feasible(c, self.budgets, self.ratios)]
            batch, queue = queue[: self.config.top] + extra, queue[self.config.top :]
            extra = []
            yield sorted(batch, key=lambda c: -self.accuracy(c))

    def first_pass(self, queue: list[Candidate], extra: list[Candidate]) -> tuple[Candidate, ExportCheck] | None:
        for batch in self.batches(queue, extra):
            for c in batch:
                if len(self.checked) >= self.config.max_checks:
                    return None
                if not self.worth_exporting(c):
                    continue
                done, check = self.export(c)
                if done.passes_measured:
                    refused = int8_gate_failures(self.run, check, self.profile.threads) \
                        if self.profile.precision == "int8" else []
                    if not refused:
                        return done, check
                    self.refused[done.arch] = refused
                shutil.rmtree(check.folder, ignore_errors=True)  # only the pick's file is kept
        return None

    def infeasible_message(self) -> str:
        worst = "; ".join(f"{arch_label(c.arch)}: " + ", ".join(
            m.describe() for m in (c.measured_checks or {}).values() if m.excess > 0) for c in self.checked
            if c.arch not in self.refused)
        refused = "; ".join(f"{arch_label(a)}: {', '.join(why)}" for a, why in self.refused.items())
        refused = f"; met them but the int8 gate would refuse the file: {refused}" if refused else ""
        return (f"target {self.profile.name!r}: no candidate predicted to meet every budget does when measured "
                f"({len(self.accs)} accuracy-checked, {len(self.checked)} exported: "
                f"{worst or 'none left to export'}{refused}); measured/predicted ratios "
                f"{({k: round(v, 2) for k, v in self.ratios.items()})}. The predictions are optimistic for this "
                f"target: re-measure its latency table (on a quiet machine) or relax the budgets")


def verify_pick(run: Run, profile: TargetProfile, result: SearchResult, config: VerifyConfig = VerifyConfig(),
                workdir: Path | None = None, known: Sequence[tuple[Candidate, float]] = ()) -> VerifiedPick:
    """Choose the most accurate candidate of the front that meets every budget when measured (see the
    module docstring), and keep its converted file for the package. `known`: candidates whose accuracy is
    already measured (the predictor's samples, the uniformly scaled networks among them), with that
    accuracy; the predicted-feasible ones join the first batch at no cost, so a measured network more
    accurate than the predicted front is not passed over. InfeasibleTargetError if none of
    `config.max_checks` exports passes (nothing is left on disk then)."""
    key = run.space.canonical
    root = Path(tempfile.mkdtemp(prefix="factory-verify-", dir=workdir))
    state = _Verification(run, profile, result.budgets, config, root, {key(c.arch): acc for c, acc in known})
    queue = [c for c in result.feasible if key(c.arch) not in state.known_acc]
    extra = [c for c, _ in known if c.feasible]  # all in the first batch: their accuracy costs nothing
    try:
        found = state.first_pass(queue, extra)
        if found is None:
            raise InfeasibleTargetError(state.infeasible_message())
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    done, check = found
    refused = [f"passed over {arch_label(a)}: met the budgets, but {'; '.join(why)}"
               for a, why in state.refused.items()]
    notes = [*result.notes, *refused, f"verified: accuracy of {state.measured_here} candidate(s) measured now, "
                                      f"{len(state.accs) - state.measured_here} known from the predictor's samples; "
                                      f"{len(state.checked)} exported and timed"]
    return VerifiedPick(replace(result, chosen=done, checked=state.checked, notes=notes), profile.format, check, root)


def _notes(profile: TargetProfile) -> str:
    notes = ["peak memory: estimate of the latency model (not measured)",
             "accuracy: PyTorch fp32 with BN recalibration (the export gate checks the exported file)"]
    if not profile.measurable_here:
        notes.append("latency: not measurable on this machine (imported table); predicted figures apply")
    return "; ".join(notes)


__all__ = ["ExportCheck", "VerifiedPick", "VerifyConfig", "measure_export", "verify_pick"]
