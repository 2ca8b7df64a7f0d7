"""`factory search`: the most accurate sub-network of a run that meets a target's budgets."""

from __future__ import annotations

from pathlib import Path

import click

from factory.commands.common import json_option, print_json, run_option


@click.command("search")
@run_option
@click.option("--target", "target", required=True,
              help="A built-in target name (see `factory targets list`) or a profile .toml file.")
@click.option("--population", type=click.IntRange(min=4), default=100, show_default=True)
@click.option("--generations", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same inputs -> same result.")
@click.option("--verify-top", type=click.IntRange(min=1), default=3, show_default=True,
              help="Measure this many top candidates for real (accuracy, exported-file latency) before picking.")
@click.option("--no-verify-top", "no_verify", is_flag=True,
              help="Trust the predictions: pick without measuring (fast, not for shipping).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where pareto.json/png go (default RUN/search/TARGET).")
@json_option
def search(run_dir: str, target: str, population: int, generations: int, seed: int, verify_top: int,
           no_verify: bool, out_dir: Path | None, as_json: bool) -> None:
    """NSGA-II over the run's space: Pareto front of predicted accuracy vs latency (and size when the
    target budgets it), then a verified pick. Exit code 3 when no sub-network meets the budgets."""
    from factory.search.run import run_search, search_dir
    from targets.profile import get_profile

    try:
        profile = get_profile(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from None
    result = run_search(run_dir, profile, population=population, generations=generations, seed=seed,
                        verify_top=0 if no_verify else verify_top, out_dir=out_dir)
    out = out_dir or search_dir(Path(run_dir), profile.name)
    if as_json:
        print_json({"target": profile.name, **result.to_dict(), "files": {
            "pareto_json": str(out / "pareto.json"), "pareto_png": str(out / "pareto.png")}})
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    feas = result.feasible
    click.echo(f"target {profile.name}: {result.unique_evaluations} sub-networks evaluated in "
               f"{result.seconds:.1f} s; front: {len(feas)} feasible of {len(result.pareto)}")
    c = result.chosen
    if c is None:  # not reached: run_search raises InfeasibleTargetError
        return
    p = c.predicted
    click.echo(f"pick: {c.arch.to_json()}")
    click.echo(f"  predicted: accuracy {100 * p.accuracy:.2f}%  p50 {p.latency_p50_ms:.3f} ms  "
               f"p95 {p.latency_p95_ms:.3f} ms  size {p.size_mb:.3f} MB  peak memory {p.peak_memory_mb:.2f} MB")
    if c.measured is not None:
        m = c.measured
        click.echo(f"  measured:  accuracy {100 * m.accuracy:.2f}%  p50 {m.latency_p50_ms:.3f} ms  "
                   f"p95 {m.latency_p95_ms:.3f} ms  size {m.size_mb:.3f} MB  ({len(result.checked)} checked)")
    click.echo(f"wrote {out / 'pareto.json'} and {out / 'pareto.png'}")
