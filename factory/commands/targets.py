"""`factory targets ...`: hardware target profiles and their measured latency tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from factory.commands.common import json_option, print_json, run_option
from factory.errors import UserInputError

_SAMPLES_HELP = ("Sub-networks exported and timed end to end for the fit (default: 48 for ONNX Runtime, "
                 "40 for OpenVINO, 32 for TFLite: their conversions cost ~0.3 / ~0.4 / ~1.5 s per model here).")


def _profile(name_or_file: str) -> Any:
    from targets.profile import ProfileError, get_profile

    try:
        return get_profile(name_or_file)
    except ProfileError as exc:
        raise UserInputError(str(exc)) from None


def _space_and_classes(run_dir: str) -> tuple[Any, int]:
    from factory.run import load_run

    run = load_run(run_dir)
    return run.space, run.num_classes


def _summary_line(p: Any) -> str:
    c = p.constraints.to_dict()
    budgets = ", ".join(f"{k}={v:g}" for k, v in c.items()) or "no budgets"
    return (f"{p.name:<18} {p.space or 'any':<9} {p.runtime:<12} {p.precision:<5} {p.threads:>7}  "
            f"{p.latency_source:<8} "
            f"{budgets}")


@click.group()
def targets() -> None:
    """Hardware targets: profiles (runtime, precision, threads, budgets) and latency tables."""


@targets.command("list")
@json_option
def list_targets(as_json: bool) -> None:
    """The built-in target profiles."""
    from targets.profile import builtin_profiles

    profiles = builtin_profiles()
    if as_json:
        print_json([p.to_dict() for p in profiles.values()])
        return
    click.echo(f"{'name':<18} {'space':<9} {'runtime':<12} {'prec':<5} {'threads':>7}  {'latency':<8} budgets")
    for p in profiles.values():
        click.echo(_summary_line(p))


@targets.command("show")
@click.argument("target")
@json_option
def show(target: str, as_json: bool) -> None:
    """One profile: TARGET is a built-in name or a .toml file."""
    p = _profile(target)
    if as_json:
        print_json(p.to_dict())
        return
    d = p.to_dict()
    click.echo(f"{p.name}: {p.description}")
    for key in ("runtime", "format", "precision", "threads", "batch"):
        click.echo(f"  {key:<12} {d[key]}")
    click.echo(f"  latency      {p.latency_source}" + (f" (table {p.latency_table})" if p.latency_table else ""))
    for key, value in d["constraints"].items():
        click.echo(f"  {key:<16} {value:g}")
    if p.source_file:
        click.echo(f"  file         {p.source_file}")


@targets.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@json_option
def validate(file: str, as_json: bool) -> None:
    """Check a profile file; exit 2 with a message naming the key and the allowed values."""
    from targets.profile import ProfileError, load_profile

    try:
        p = load_profile(file)
    except ProfileError as exc:
        raise UserInputError(str(exc)) from None
    if as_json:
        print_json({"valid": True, "profile": p.to_dict()})
    else:
        click.echo(f"ok: {file} defines target {p.name!r} ({p.runtime}, {p.precision}, {p.threads} thread(s))")


@targets.command("measure")
@click.argument("target")
@run_option
@click.option("--samples", type=click.IntRange(20, 1000), default=None, help=_SAMPLES_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampled sub-networks.")
@json_option
def measure(target: str, run_dir: str, samples: int | None, seed: int, as_json: bool) -> None:
    """Measure TARGET's latency table on this machine -> RUN/latency/TARGET.json."""
    from targets.latency import build_latency_table, table_path
    from targets.table import LatencyTable, LatencyTableError

    p = _profile(target)
    space, num_classes = _space_and_classes(run_dir)
    try:
        path = build_latency_table(space, num_classes, p, table_path(Path(run_dir), p.name),
                                   progress=not as_json, samples=samples, seed=seed)
    except (LatencyTableError, ValueError) as exc:
        raise UserInputError(str(exc)) from None
    _report_table(LatencyTable.load(path), path, as_json)


@targets.command("probe")
@click.argument("target")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New folder for the bundle (copy it to the device).")
@click.option("--run", "run_dir", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Run whose space and class count the probe models follow (else --space/--phi/--classes).")
@click.option("--space", "space_name", default="small", show_default=True, help="Space, when no --run.")
@click.option("--phi", type=float, default=0.0, show_default=True, help="Compound scaling, when no --run.")
@click.option("--classes", "num_classes", type=click.IntRange(2, 100000), default=10, show_default=True,
              help="Classifier width, when no --run.")
@click.option("--samples", type=click.IntRange(20, 1000), default=None, help=_SAMPLES_HELP)
@click.option("--seed", type=int, default=0, show_default=True)
def probe(target: str, out_dir: Path, run_dir: str | None, space_name: str, phi: float, num_classes: int,
          samples: int | None, seed: int) -> None:
    """Write a self-contained probe bundle (models + runner.py + manifest) to run on TARGET's device."""
    from supernets import get_space
    from targets.probe import write_probe_bundle

    p = _profile(target)
    if run_dir is not None:
        space, num_classes = _space_and_classes(run_dir)
    else:
        try:
            space = get_space(space_name, phi=phi)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    try:
        manifest = write_probe_bundle(p, space, num_classes, out_dir, samples=samples, seed=seed)
    except ValueError as exc:
        raise UserInputError(str(exc)) from None
    click.echo(f"wrote {manifest.parent}; copy it to the device and run: python runner.py  (writes RESULTS.json); "
               f"then: factory targets import {p.name} RESULTS.json --run RUN")


@targets.command("import")
@click.argument("target")
@click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
@run_option
@json_option
def import_(target: str, results: Path, run_dir: str, as_json: bool) -> None:
    """Fit TARGET's latency table from a device's RESULTS.json -> RUN/latency/TARGET.json."""
    from targets.latency import table_path
    from targets.probe import import_results
    from targets.table import LatencyTableError

    p = _profile(target)
    space, num_classes = _space_and_classes(run_dir)
    try:
        table = import_results(p, results, space, num_classes)
    except (LatencyTableError, ValueError) as exc:
        raise UserInputError(str(exc)) from None
    path = table.save(table_path(Path(run_dir), p.name))
    _report_table(table, path, as_json)


def _report_table(table: Any, path: Path, as_json: bool) -> None:
    summary = {"table": str(path), "target": table.target, "settings": table.settings, "machine": table.machine,
               "method": table.method, "fit": {k: table.fit[k] for k in ("p50_cv5", "p95_cv5", "size_train")},
               "measured_p50_range_ms": table.fit["measured_p50_range_ms"]}
    if as_json:
        print_json(summary)
        return
    cv = table.fit["p50_cv5"]
    lo, hi = table.fit["measured_p50_range_ms"]
    click.echo(f"wrote {path}")
    click.echo(f"  {table.method['samples']} sub-networks timed, p50 {lo:.3f}..{hi:.3f} ms on "
               f"{table.machine.get('cpu_model')} ({table.machine.get('runtime_version')})")
    click.echo(f"  5-fold CV of the fit: {cv['within_10pct']:.0%} within +-10%, Spearman {cv['spearman']:.3f}, "
               f"mean abs error {cv['mean_abs_rel_error']:.1%}; size fit max error "
               f"{table.fit['size_train']['max_abs_rel_error']:.2%}")
    timing = table.method.get("timing", {})
    if timing.get("contended_rounds"):
        timed = timing["rounds_timed"]
        counted = timing.get("contended_counted", timing["contended_rounds"] >= timed)
        click.echo(f"  {timing['contended_rounds']} of {timed} timing rounds were contended (the "
                   f"{table.settings.get('threads')}-thread runs much slower than 1 thread) "
                   + ("and are counted: the slowdown outlasted the wait for clean rounds, so the table describes "
                      "the machine in that state; re-measure on a quieter machine if it is not the usual one"
                      if counted else "and were set aside"))
