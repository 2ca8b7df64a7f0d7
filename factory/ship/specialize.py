"""`factory specialize`: for every target, latency table -> search -> verified pick -> package, then a report.

Targets are independent: one that is infeasible or fails verification is reported and the others
still ship. One accuracy predictor serves every target (fitted first when the run has none). Per
target, the latency model is loaded (or measured) once and handed to the search, and the search's
verified pick (its calibrated network, converted file and latency measurement) is handed to the
package writer: one BN recalibration, one extraction and one conversion per target and format.
Each step is a library call (the ones `factory targets measure`, `factory search` and `factory
export` make), so this module only orchestrates and records outcomes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from factory.errors import FactoryError, InfeasibleTargetError, UserInputError, VerificationError
from factory.ship.report import TargetOutcome, write_report
from factory.ship.stages import StageTimes

if TYPE_CHECKING:
    from exports.package import WrittenPackage
    from factory.predictor.model import AccuracyPredictor
    from factory.run import Run
    from factory.tracking import Tracker
    from supernets import ArchConfig
    from targets.latency import LatencyModel
    from targets.profile import TargetProfile

Say = Callable[[str], None]


@dataclass(frozen=True)
class SpecializeOptions:
    population: int = 100
    generations: int = 100
    seed: int = 0
    verify_top: int = 3
    latency_repeats: int = 200  # the gate's timed runs per file it times itself (not when the pick timed it)
    # sub-networks measured to fit the accuracy predictor when the run has none (None: the space's default)
    predictor_samples: int | None = None
    sign_key: Path | None = None  # EC private key (PEM): every package is signed (exports.signing)


def resolve_targets(spec: str, space_name: str | None = None) -> list[TargetProfile]:
    """'all' = every built-in target measurable on this machine whose budgets are sized for the run's
    space (28-px digits or 224-px ImageNet-class); else comma-separated names or TOML paths."""
    from targets.profile import ProfileError, builtin_profiles, get_profile

    if spec.strip() == "all":
        return [p for p in builtin_profiles().values()
                if p.measurable_here and (space_name is None or p.suits(space_name))]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UserInputError("--targets: empty; give 'all' or comma-separated target names / profile files")
    try:
        return [get_profile(n) for n in names]
    except ProfileError as exc:
        raise UserInputError(f"--targets: {exc}") from None


def ensure_predictor(run: Run, samples: int, say: Say,
                     tracker: Tracker | None = None) -> tuple[AccuracyPredictor, bool]:
    """The run's accuracy predictor, fitted first (with progress) when the run has none: a search without
    one would measure every candidate. The flag says whether it was there already."""
    from factory.predictor.fit import default_holdout, fit_predictor
    from factory.predictor.model import load_predictor

    predictor = load_predictor(run.path, run.space, run.checkpoint_sha256)
    if predictor is not None:
        say(f"reusing the accuracy predictor in {run.path}")
        return predictor, True
    holdout = default_holdout(samples)
    say(f"no accuracy predictor in {run.path}: fitting one on {samples} measured sub-networks ({holdout} held "
        f"out) and the uniformly scaled ones (as `factory predictor fit --run {run.path}` does)")
    report = fit_predictor(run.path, samples=samples, holdout=holdout, progress=True)
    say(f"predictor: held-out Spearman {report.holdout_spearman:.3f} on {report.holdout} random sub-networks "
        f"(MACs alone {report.macs_spearman:.3f}); {report.samples} measured in {report.measure_seconds:.0f} s"
        + ("" if report.screen is None else f" ({report.screened} of them on the {len(report.screen.hard)} "
           f"images the {report.screen.exact} measured on all {report.screen.total} disagree on)"))
    lo, hi = report.accuracy_range
    if hi - lo < 0.01:
        say(f"warning: every measured sub-network scored {100 * lo:.1f}-{100 * hi:.1f}% on {report.val_images} "
            f"images: nothing to rank (an untrained supernet, or labels that do not match the images); "
            f"the accuracies it predicts carry no information")
    if tracker is not None:
        from factory.tracking import log_predictor_fit

        log_predictor_fit(tracker, report.to_dict())
    fitted = load_predictor(run.path, run.space, run.checkpoint_sha256)
    if fitted is None:
        raise FactoryError(f"{report.path}: the predictor just fitted is not there")
    return fitted, False


def ensure_latency_table(run: Run, profile: TargetProfile, say: Say, onnx_cache: Path | None = None) -> LatencyModel:
    """The target's latency model, measured on this machine first when missing or stale (imported tables
    must exist: they come from the device). `onnx_cache`: see targets.probe.export_models."""
    from targets.latency import build_latency_table, load_latency_model, table_path

    try:
        return load_latency_model(run.path, profile, space=run.space, num_classes=run.num_classes)
    except ValueError as exc:
        if not profile.measurable_here:
            raise FactoryError(f"{profile.name}: {exc} (this target's table comes from its device: "
                               f"`factory targets probe {profile.name}` then `factory targets import`)") from None
        say(f"{profile.name}: measuring latency table ({exc})")
    build_latency_table(run.space, run.num_classes, profile, table_path(run.path, profile.name), progress=True,
                        onnx_cache=onnx_cache)
    return load_latency_model(run.path, profile, space=run.space, num_classes=run.num_classes)


def latency_table_file(run: Run, profile: TargetProfile) -> Path:
    """The file `ensure_latency_table` loaded: the run's own table, else the profile's."""
    from targets.latency import table_path

    path = table_path(run.path, profile.name)
    return path if path.exists() or profile.latency_table is None else profile.latency_table


def package_name(run: Run, arch: ArchConfig) -> str:
    digest = hashlib.sha256(arch.to_json().encode()).hexdigest()[:8]
    return f"{run.name}-r{arch.resolution}-{digest}"


def specialize_target(run: Run, profile: TargetProfile, out_dir: Path, options: SpecializeOptions, say: Say,
                      predictor: AccuracyPredictor, onnx_cache: Path | None = None) -> TargetOutcome:
    """One target end to end; never raises for a domain failure (the outcome records it, exit code too).
    `onnx_cache`: probe exports shared between the targets' latency tables (targets.probe.export_models)."""
    from factory.ship.reuse import remember, reusable_outcome, specialization_inputs

    started = time.perf_counter()
    outcome = TargetOutcome(target=profile.name, status="failed", runtime=profile.runtime,
                            precision=profile.precision, budgets=profile.constraints.to_dict())
    inputs = None
    try:
        latency = ensure_latency_table(run, profile, say, onnx_cache)
        outcome.stage_seconds["latency table"] = round(time.perf_counter() - started, 2)
        inputs = specialization_inputs(run, profile, options, latency_table_file(run, profile))
        reused = reusable_outcome(out_dir, profile, inputs)
        if reused is not None:
            say(f"{profile.name}: nothing changed since {reused.package} was shipped (same supernet, predictor, "
                f"latency table, profile, options and code): reusing it")
            reused.stage_seconds = {"reused": round(time.perf_counter() - started, 2)}
            reused.seconds = time.perf_counter() - started
            return reused
        _ship_target(run, profile, out_dir, options, say, predictor, outcome, latency)
        outcome.status = "shipped"
    except FactoryError as exc:
        outcome.status = "infeasible" if isinstance(exc, InfeasibleTargetError) else "failed"
        outcome.message, outcome.exit_code = str(exc), exc.exit_code
        if isinstance(exc, VerificationError):
            outcome.formats_failed = [profile.format]
    except Exception as exc:  # one target's bug must not stop the others; the report names it
        outcome.message, outcome.exit_code = f"unexpected {type(exc).__name__}: {exc}", 1
    outcome.seconds = time.perf_counter() - started
    if inputs is not None:
        remember(out_dir, profile, inputs, outcome)
    return outcome


def _ship_target(run: Run, profile: TargetProfile, out_dir: Path, options: SpecializeOptions, say: Say,
                 predictor: AccuracyPredictor, outcome: TargetOutcome, latency: LatencyModel) -> None:
    """Search -> package; fills `outcome` as it goes (the pick before the package, so a refused package
    still reports what was picked)."""
    from factory.search.run import run_search
    from factory.ship.export import export_package, package_pick

    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        outcome.stage_seconds[stage] = round(now - clock, 2)
        clock = now

    say(f"{profile.name}: searching ({options.population} x {options.generations}, seed {options.seed})")
    target_dir = out_dir / profile.name
    try:
        searched = run_search(run, profile, population=options.population, generations=options.generations,
                              seed=options.seed, verify_top=options.verify_top, latency=latency, predictor=predictor)
    finally:
        _copy_pareto_plot(run, profile, target_dir, outcome, out_dir)
        lap("search + verified pick")
    lineage = {"search_seed": options.seed}
    with searched:
        chosen = searched.result.chosen
        assert chosen is not None  # run_search raises InfeasibleTargetError otherwise
        outcome.arch, outcome.predicted_p50_ms = chosen.arch.to_dict(), chosen.predicted.latency_p50_ms
        package_dir = target_dir / package_name(run, chosen.arch)
        if searched.pick is None:  # --verify-top 0: nothing was converted yet
            say(f"{profile.name}: exporting the pick ({profile.format} {profile.precision})")
            package = export_package(run, chosen.arch, [profile.format], profile.precision, package_dir,
                                     target=profile, lineage_extra=lineage, progress=say,
                                     latency_repeats=options.latency_repeats)
        else:
            say(f"{profile.name}: packaging the verified pick ({profile.format} {profile.precision})")
            package = package_pick(run, searched.pick, profile, package_dir, lineage, say, options.latency_repeats,
                                   sign_key=options.sign_key)
    lap("package")
    _record_package(outcome, package, out_dir)


def _copy_pareto_plot(run: Run, profile: TargetProfile, target_dir: Path, outcome: TargetOutcome,
                      out_dir: Path) -> None:
    from factory.search.files import SearchFiles

    png = SearchFiles.at(None, run.path, profile.name).pareto_png
    if png.is_file():
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, target_dir / "pareto.png")
        outcome.pareto_png = str((target_dir / "pareto.png").relative_to(out_dir))


def _record_package(outcome: TargetOutcome, package: WrittenPackage, out_dir: Path) -> None:
    """The report row's figures, from the package just written (its manifest in memory)."""
    metrics = package.manifest["metrics"]
    files = metrics.get("files", {})
    if files:
        first = next(iter(files.values()))
        outcome.accuracy = first.get("accuracy")
        tested = metrics.get("test", {}).get("files", {})
        outcome.test_accuracy = tested.get(next(iter(files)))
        outcome.latency_p50_ms = first.get("latency_p50_ms")
        outcome.latency_p95_ms = first.get("latency_p95_ms")
        outcome.size_mb = first.get("size_bytes", 0) / 1e6 if first.get("size_bytes") else None
    outcome.macs = metrics.get("macs")
    outcome.formats_passed = [f["format"] for f in package.manifest["files"]]
    path, out_dir = package.path.resolve(), out_dir.resolve()
    outcome.package = str(path.relative_to(out_dir)) if path.is_relative_to(out_dir) else str(path)


def specialize(run_dir: str | Path, targets: str, out_dir: str | Path, options: SpecializeOptions | None = None,
               say: Say | None = None, tracker: Tracker | None = None,
               times: StageTimes | None = None) -> list[TargetOutcome]:
    """Search, export and verify one package per target; write report.md/html/json in `out_dir`. The
    accuracy predictor is fitted first when the run has none. `tracker` (factory.tracking) records the
    predictor's fit, each target's pick, figures, plot and package, and the report. `times` receives the
    wall seconds of each stage (predictor, then each target's latency table, search and package)."""
    from factory.run import load_run
    from factory.tracking import NullTracker, log_report, log_target

    tracker = tracker or NullTracker()
    options = options or SpecializeOptions()
    say = say or (lambda _m: None)
    run = load_run(run_dir)
    profiles = resolve_targets(targets, run.space.name)
    from factory.predictor.fit import default_samples

    times = times if times is not None else StageTimes()
    start = time.perf_counter()
    predictor, reused = ensure_predictor(run, options.predictor_samples or default_samples(run.space.name), say,
                                         tracker)
    times.add("accuracy predictor", time.perf_counter() - start, "reused" if reused else "fitted")
    tracker.log_params({"run": str(run.path), "supernet_sha256": run.checkpoint_sha256, "targets": targets,
                        "search": asdict(options)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="factory-probe-onnx-") as onnx_cache:
        for i, profile in enumerate(profiles, 1):
            say(f"[{i}/{len(profiles)}] target {profile.name}: {profile.description}")
            outcome = specialize_target(run, profile, out, options, say, predictor, Path(onnx_cache))
            for stage, seconds in outcome.stage_seconds.items():
                times.add(f"{profile.name}: {stage}", seconds)
            say(f"[{i}/{len(profiles)}] {profile.name}: {outcome.status}"
                + (f" — {outcome.message}" if outcome.message else "") + f" ({outcome.seconds:.0f} s)")
            outcomes.append(outcome)
            log_target(tracker, outcome, out)
    notes = [f"run {run.path} (supernet sha256 {run.checkpoint_sha256[:12]}), search seed {options.seed}, "
             f"population {options.population} x {options.generations} generations",
             "latencies are measured on this machine, batch 1, in the target's runtime, precision and threads",
             "test accuracy: the run's test split, which no training, predictor, search or pick saw (95% Wilson "
             "interval; picks whose intervals overlap may be ties); val accuracy: the split the pick was chosen on "
             "(optimistic)"]
    write_report(outcomes, out, title=f"Specialization report: {run.name}", notes=notes)
    (out / "report.json").write_text(json.dumps([o.to_dict() for o in outcomes], indent=2) + "\n")
    log_report(tracker, out)
    return outcomes
