"""`factory specialize`: for every target, latency table -> search -> export -> verify, then a report.

Targets are independent: one that is infeasible or fails verification is reported and the others
still ship. Each step is a library call (the same ones `factory targets measure`, `factory search`
and `factory export` make), so this module only orchestrates and records outcomes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory.errors import FactoryError, InfeasibleTargetError, UserInputError, VerificationError
from factory.ship.report import TargetOutcome, write_report

Say = Callable[[str], None]


@dataclass(frozen=True)
class SpecializeOptions:
    population: int = 100
    generations: int = 100
    seed: int = 0
    verify_top: int = 3
    latency_repeats: int = 200


def resolve_targets(spec: str) -> list[Any]:
    """'all' = every built-in target measurable on this machine; else comma-separated names or TOML paths."""
    from targets.profile import ProfileError, builtin_profiles, get_profile

    if spec.strip() == "all":
        return [p for p in builtin_profiles().values() if p.measurable_here]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UserInputError("--targets: empty; give 'all' or comma-separated target names / profile files")
    try:
        return [get_profile(n) for n in names]
    except ProfileError as exc:
        raise UserInputError(f"--targets: {exc}") from None


def ensure_latency_table(run: Any, profile: Any, say: Say) -> None:
    """Measure the target's table on this machine when it is missing or stale; imported tables must exist."""
    from targets.latency import build_latency_table, load_latency_model, table_path

    try:
        load_latency_model(run.path, profile, space=run.space, num_classes=run.num_classes)
        return
    except ValueError as exc:
        if not profile.measurable_here:
            raise FactoryError(f"{profile.name}: {exc} (this target's table comes from its device: "
                               f"`factory targets probe {profile.name}` then `factory targets import`)") from None
        say(f"{profile.name}: measuring latency table ({exc})")
    build_latency_table(run.space, run.num_classes, profile, table_path(run.path, profile.name), progress=True)


def package_name(run: Any, arch: Any) -> str:
    import hashlib

    digest = hashlib.sha256(arch.to_json().encode()).hexdigest()[:8]
    return f"{run.name}-r{arch.resolution}-{digest}"


def specialize_target(run: Any, profile: Any, out_dir: Path, options: SpecializeOptions, say: Say) -> TargetOutcome:
    """One target end to end; never raises for a domain failure (the outcome records it)."""
    from factory.search.run import run_search
    from factory.ship.export import export_package

    started = time.perf_counter()
    outcome = TargetOutcome(target=profile.name, status="failed", runtime=profile.runtime,
                            precision=profile.precision, budgets=profile.constraints.to_dict())
    target_dir = out_dir / profile.name
    try:
        ensure_latency_table(run, profile, say)
        say(f"{profile.name}: searching ({options.population} x {options.generations}, seed {options.seed})")
        try:
            result = run_search(run, profile, population=options.population, generations=options.generations,
                                seed=options.seed, verify_top=options.verify_top)
        finally:
            _copy_pareto_plot(run, profile, target_dir, outcome, out_dir)
        pick = result.chosen
        outcome.arch = pick.arch.to_dict()
        outcome.predicted_p50_ms = pick.predicted.latency_p50_ms
        say(f"{profile.name}: exporting the pick ({profile.format} {profile.precision})")
        package = export_package(run, pick.arch, formats=[profile.format], precision=profile.precision,
                                 out_dir=target_dir / package_name(run, pick.arch), target=profile,
                                 lineage_extra={"search_seed": options.seed}, progress=say,
                                 latency_repeats=options.latency_repeats)
        _record_package(outcome, package, out_dir)
        outcome.status = "shipped"
    except InfeasibleTargetError as exc:
        outcome.status, outcome.message = "infeasible", str(exc)
    except VerificationError as exc:
        outcome.status, outcome.message = "failed", str(exc)
        outcome.formats_failed = [profile.format]
    except FactoryError as exc:
        outcome.message = str(exc)
    except Exception as exc:  # one target's bug must not stop the others; the report names it
        outcome.message = f"unexpected {type(exc).__name__}: {exc}"
    outcome.seconds = time.perf_counter() - started
    return outcome


def _copy_pareto_plot(run: Any, profile: Any, target_dir: Path, outcome: TargetOutcome, out_dir: Path) -> None:
    from factory.search.run import search_dir

    png = search_dir(run.path, profile.name) / "pareto.png"
    if png.is_file():
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, target_dir / "pareto.png")
        outcome.pareto_png = str((target_dir / "pareto.png").relative_to(out_dir))


def _record_package(outcome: TargetOutcome, package: Path, out_dir: Path) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    metrics = manifest["metrics"]
    files = metrics.get("files", {})
    if files:
        first = next(iter(files.values()))
        outcome.accuracy = first.get("accuracy")
        outcome.latency_p50_ms = first.get("latency_p50_ms")
        outcome.latency_p95_ms = first.get("latency_p95_ms")
        outcome.size_mb = first.get("size_bytes", 0) / 1e6 if first.get("size_bytes") else None
    outcome.macs = metrics.get("macs")
    outcome.formats_passed = [f["format"] for f in manifest["files"]]
    package, out_dir = package.resolve(), out_dir.resolve()
    outcome.package = str(package.relative_to(out_dir)) if package.is_relative_to(out_dir) else str(package)


def specialize(run_dir: str | Path, targets: str, out_dir: str | Path, options: SpecializeOptions | None = None,
               say: Say | None = None) -> list[TargetOutcome]:
    """Search, export and verify one package per target; write report.md/html in `out_dir`."""
    from factory.run import load_run

    options = options or SpecializeOptions()
    say = say or (lambda _m: None)
    run = load_run(run_dir)
    profiles = resolve_targets(targets)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for i, profile in enumerate(profiles, 1):
        say(f"[{i}/{len(profiles)}] target {profile.name}: {profile.description}")
        outcome = specialize_target(run, profile, out, options, say)
        say(f"[{i}/{len(profiles)}] {profile.name}: {outcome.status}"
            + (f" — {outcome.message}" if outcome.message else "") + f" ({outcome.seconds:.0f} s)")
        outcomes.append(outcome)
    notes = [f"run {run.path} (supernet sha256 {run.checkpoint_sha256[:12]}), search seed {options.seed}, "
             f"population {options.population} x {options.generations} generations",
             "latencies are measured on this machine, batch 1, in the target's runtime, precision and threads"]
    write_report(outcomes, out, title=f"Specialization report: {run.name}", notes=notes)
    (out / "report.json").write_text(json.dumps([o.to_dict() for o in outcomes], indent=2) + "\n")
    return outcomes
