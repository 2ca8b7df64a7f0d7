"""`factory search`: the most accurate sub-network of a run that meets a target's budgets."""

from __future__ import annotations

from pathlib import Path

import click

from factory.commands.common import json_option, print_json, run_option, search_options, track_option, verify_top_option


@click.command("search")
@run_option
@click.option("--target", "target", required=True,
              help="A built-in target name (see `factory targets list`) or a profile .toml file.")
@search_options
@verify_top_option
@click.option("--no-verify-top", "no_verify", is_flag=True, help="Same as --verify-top 0.")
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="A folder (pareto.json, pareto.png and pick.json go in it; default RUN/search/TARGET) or a "
                   "path ending in .json for the pick (then STEM.pareto.json and STEM.pareto.png go next to it). "
                   "`factory export --arch` takes the pick file as it is.")
@json_option
@track_option
def search(run_dir: str, target: str, population: int, generations: int, seed: int, verify_top: int,
           no_verify: bool, out: Path | None, as_json: bool, track: str | None) -> None:
    """NSGA-II over the run's space: Pareto front of predicted accuracy vs latency (and size when the
    target budgets size), then a verified pick. Needs the run's accuracy predictor (`factory predictor
    fit`; exit 2 without one). Exit code 3 when no sub-network meets the budgets."""
    from factory.search.run import run_search
    from targets.profile import get_profile

    try:
        profile = get_profile(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from None
    from factory.tracking import tracked

    with tracked(track, Path(run_dir), "search", {"factory.target": profile.name}) as tracker:
        tracker.log_params({"target": profile.name, "population": population, "generations": generations,
                            "seed": seed, "verify_top": 0 if no_verify else verify_top,
                            "budgets": profile.constraints.to_dict()})
        with run_search(run_dir, profile, population=population, generations=generations, seed=seed,
                        verify_top=0 if no_verify else verify_top, out=out) as searched:
            result, files = searched.result, searched.files
        if result.chosen is not None:
            tracker.log_metrics({f"predicted.{k}": v for k, v in result.chosen.predicted.to_dict().items()})
            if result.chosen.measured is not None:
                tracker.log_metrics({f"measured.{k}": v for k, v in result.chosen.measured.to_dict().items()})
            tracker.set_tags({"pick": result.chosen.arch.to_json()})
        for path in (files.pick_json, files.pareto_json, files.pareto_png):
            tracker.log_artifact(path, "search")
    written = {"pareto_json": str(files.pareto_json), "pareto_png": str(files.pareto_png),
               "pick_json": str(files.pick_json)}
    if as_json:
        print_json({"target": profile.name, **result.to_dict(), "files": written})
        return
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"target {profile.name}: {result.unique_evaluations} sub-networks evaluated in "
               f"{result.seconds:.1f} s; front: {len(result.feasible)} feasible of {len(result.pareto)}")
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
    click.echo(f"wrote {files.pick_json}, {files.pareto_json} and {files.pareto_png}")
