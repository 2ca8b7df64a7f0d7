"""`factory specialize`, `factory benchmark`, `factory demo`: the product's end-to-end commands."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click

from factory.commands.common import (
    json_option,
    print_json,
    run_option,
    search_options,
    sign_key_option,
    track_option,
    verify_top_option,
)

if TYPE_CHECKING:
    from factory.ship.report import TargetOutcome


def _say(message: str) -> None:
    """A progress line (one per step); silent under --quiet."""
    from exports.progress import quiet

    if not quiet():
        click.echo(message, err=True)


def _summarise(outcomes: list[TargetOutcome], out: Path, as_json: bool) -> None:
    """Print one line per target (or JSON); SomeFailedError when a target did not ship, its exit code by
    factory.errors.combined_exit_code."""
    from exports.intervals import estimate_text
    from factory.errors import SomeFailedError, combined_exit_code

    if as_json:
        print_json([o.to_dict() for o in outcomes])
    else:
        for o in outcomes:
            if o.status == "shipped":
                test = f"test accuracy {estimate_text(o.test_accuracy)}  " if o.test_accuracy else ""
                click.echo(f"{o.target:<16} shipped  {o.package}  {test}val accuracy {100 * (o.accuracy or 0):.2f}%  "
                           f"p50 {o.latency_p50_ms:.3f} ms  p95 {o.latency_p95_ms:.3f} ms  size {o.size_mb:.2f} MB")
            else:
                click.echo(f"{o.target:<16} {o.status.upper()}  {o.message}")
        click.echo(f"report: {out / 'report.md'} and {out / 'report.html'}")
    failed = [o for o in outcomes if o.status != "shipped"]
    if failed:
        raise SomeFailedError(f"{len(failed)} of {len(outcomes)} target(s) not shipped: "
                              + ", ".join(f"{o.target} ({o.status})" for o in failed),
                              combined_exit_code(o.exit_code for o in outcomes))


@click.command("specialize")
@run_option
@click.option("--targets", "targets_spec", default="all", show_default=True,
              help="'all' (every built-in target measurable here) or comma-separated names / profile TOML files.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"),
              show_default=True, help="Where packages (OUT/<target>/<package>/) and report.md/html go.")
@search_options
@verify_top_option
@click.option("--predictor-samples", type=click.IntRange(min=30), default=None,
              help="When the run has no accuracy predictor: random sub-networks measured to fit one first. "
                   "Default: 400 for the 28-px space, 100 for the 224-px ofa_mbv3 space.")
@json_option
@track_option
@sign_key_option
def specialize_command(run_dir: str, targets_spec: str, out: Path, population: int, generations: int, seed: int,
                       verify_top: int, predictor_samples: int, as_json: bool, track: str | None,
                       sign_key: Path | None) -> None:
    """For every target: latency table (measured if missing), search, the verified pick packaged in the
    target's runtime and precision and checked by the gate; then OUT/report.md + report.html. Fits the
    accuracy predictor first when the run has none. Targets are independent: a failing one is reported
    and the others still ship.

    \b
    Exit code: 0 when every target shipped; else, when all failures are of one
    kind, that kind's code (3 all infeasible, 4 all refused by the verification
    gate, 2 all bad input); failures of mixed kinds: 1.
    """
    from factory.ship.specialize import SpecializeOptions, specialize
    from factory.tracking import tracked

    options = SpecializeOptions(population=population, generations=generations, seed=seed, verify_top=verify_top,
                                predictor_samples=predictor_samples, sign_key=sign_key)
    with tracked(track, Path(run_dir), "specialize") as tracker:
        outcomes = specialize(run_dir, targets_spec, out, options, say=_say, tracker=tracker)
    _summarise(outcomes, out, as_json)


@click.command("benchmark")
@click.argument("package", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--repeats", type=click.IntRange(min=10), default=200, show_default=True, help="Timed runs per file.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Override the package's thread count.")
@json_option
def benchmark_command(package: Path, repeats: int, threads: int | None, as_json: bool) -> None:
    """Accuracy and p50/p95 latency of every file in PACKAGE, with the parity gate's verdict per file.
    Exit 4 when any file fails the gate."""
    from factory.errors import VerificationError
    from factory.ship.benchmark import benchmark_package, render_table

    report = benchmark_package(package, repeats=repeats, threads=threads)
    if as_json:
        print_json(report)
    else:
        click.echo(render_table(report))
    if not report.get("passed", False):
        raise VerificationError(f"{package}: " + "; ".join(report.get("failures") or ["the gate refused it"]))


@click.command("demo")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("dist"),
              show_default=True, help="Where the packages and the report go.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Run folder for the demo supernet (reused when already trained).")
@click.option("--retrain", is_flag=True, help="Delete the demo run folder and train from scratch.")
@click.option("--samples", type=click.IntRange(min=30), default=450, show_default=True,
              help="Random sub-networks measured to fit the accuracy predictor (50 of them held out to score "
                   "it); the uniformly scaled ones are measured as well.")
@search_options
@track_option
@sign_key_option
def demo_command(out: Path, run_dir: Path, retrain: bool, samples: int, population: int, generations: int,
                 seed: int, track: str | None, sign_key: Path | None) -> None:
    """The whole chain on the embedded MNIST-5k digits: train the demo supernet (progressive
    shrinking), fit the accuracy predictor, specialize for every built-in target measurable here,
    and print where the packages and the report are."""
    from factory.ship.demo import run_demo

    if retrain and run_dir.exists():
        shutil.rmtree(run_dir)
    outcomes = run_demo(run_dir, out, samples=samples, population=population, generations=generations, seed=seed,
                        say=_say, track=track, sign_key=sign_key)
    _summarise(outcomes, out, as_json=False)
