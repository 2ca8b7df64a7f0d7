"""`factory specialize`, `factory benchmark`, `factory demo`: the product's end-to-end commands."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import click

from factory.commands.common import json_option, print_json, run_option


def _say(message: str) -> None:
    click.echo(message, err=True)


def _search_options(f):
    f = click.option("--seed", type=int, default=0, show_default=True, help="Search seed (same seed, same pick).")(f)
    f = click.option("--generations", type=click.IntRange(min=1), default=100, show_default=True,
                     help="NSGA-II generations per target.")(f)
    f = click.option("--population", type=click.IntRange(min=4), default=100, show_default=True,
                     help="NSGA-II population per target.")(f)
    return f


def _summarise(outcomes, out: Path, as_json: bool) -> None:
    if as_json:
        print_json([o.to_dict() for o in outcomes])
    else:
        for o in outcomes:
            if o.status == "shipped":
                click.echo(f"{o.target:<16} shipped  {o.package}  accuracy {100 * (o.accuracy or 0):.2f}%  "
                           f"p50 {o.latency_p50_ms:.3f} ms  p95 {o.latency_p95_ms:.3f} ms  size {o.size_mb:.2f} MB")
            else:
                click.echo(f"{o.target:<16} {o.status.upper()}  {o.message}")
        click.echo(f"report: {out / 'report.md'} and {out / 'report.html'}")
    failed = [o for o in outcomes if o.status != "shipped"]
    if failed:
        codes = {o.status for o in failed}
        sys.exit(3 if codes == {"infeasible"} else 1)


@click.command("specialize")
@run_option
@click.option("--targets", "targets_spec", default="all", show_default=True,
              help="'all' (every built-in target measurable here) or comma-separated names / profile TOML files.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"),
              show_default=True, help="Where packages (OUT/<target>/<package>/) and report.md/html go.")
@_search_options
@click.option("--verify-top", type=click.IntRange(min=0), default=3, show_default=True,
              help="Candidates checked for real (BN-recalibrated accuracy, latency of the exported file).")
@json_option
def specialize_command(run_dir, targets_spec, out, population, generations, seed, verify_top, as_json) -> None:
    """For every target: latency table (measured if missing), search, export in the target's runtime and
    precision, verify; then OUT/report.md + report.html. Targets are independent: a failing one is
    reported and the others still ship. Exit 0 when all shipped, 3 when only infeasible targets failed,
    else 1."""
    from factory.ship.specialize import SpecializeOptions, specialize

    options = SpecializeOptions(population=population, generations=generations, seed=seed, verify_top=verify_top)
    outcomes = specialize(run_dir, targets_spec, out, options, say=_say)
    _summarise(outcomes, out, as_json)


@click.command("benchmark")
@click.argument("package", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--repeats", type=click.IntRange(min=10), default=200, show_default=True, help="Timed runs per file.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Override the package's thread count.")
@json_option
def benchmark_command(package, repeats, threads, as_json) -> None:
    """Accuracy and p50/p95 latency of every file in PACKAGE, with the parity gate's verdict per file.
    Exit 4 when any file fails the gate."""
    from factory.ship.benchmark import benchmark_package, render_table

    report = benchmark_package(package, repeats=repeats, threads=threads)
    if as_json:
        print_json(report)
    else:
        click.echo(render_table(report))
    if not report.get("passed", False):
        sys.exit(4)


@click.command("demo")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"),
              show_default=True, help="Where the packages and the report go.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Run folder for the demo supernet (reused when already trained).")
@click.option("--retrain", is_flag=True, help="Delete the demo run folder and train from scratch.")
@click.option("--samples", type=click.IntRange(min=30), default=450, show_default=True,
              help="Random sub-networks measured to fit the accuracy predictor (50 of them held out to score "
                   "it); the uniformly scaled ones are measured as well.")
@_search_options
def demo_command(out, run_dir, retrain, samples, population, generations, seed) -> None:
    """The whole chain on the embedded MNIST-5k digits: train the demo supernet (progressive
    shrinking), fit the accuracy predictor, specialize for every built-in target measurable here,
    and print where the packages and the report are."""
    from factory.ship.demo import run_demo

    if retrain and run_dir.exists():
        shutil.rmtree(run_dir)
    outcomes = run_demo(run_dir, out, samples=samples, population=population, generations=generations, seed=seed,
                        say=_say)
    _summarise(outcomes, out, as_json=False)
