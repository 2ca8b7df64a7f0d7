"""`run_search`: search one target of a trained run end to end, as `factory search` and `factory
specialize` do: search with the target's latency model and the run's accuracy predictor, verify the
pick, write pareto.json, pareto.png and pick.json (`factory.search.files`).

The accuracy predictor is required: without one, every candidate would be measured (~1 s each), and
a search of any useful size would take hours. `factory specialize` fits one when it is missing;
`factory search` stops and says how (`factory predictor fit --run RUN`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from factory.errors import FactoryError, InfeasibleTargetError, UserInputError
from factory.search.engine import Candidate, CandidateEvaluator, MapFn, SearchResult, arch_label, check_budgets, search
from factory.search.files import SearchFiles, write_search_files

if TYPE_CHECKING:
    from exports.budgets import Constraints
    from factory.predictor.model import AccuracyPredictor
    from factory.run import Run
    from factory.search.pick import VerifiedPick
    from targets.latency import LatencyModel
    from targets.profile import TargetProfile


@dataclass(frozen=True)
class SearchOutcome:
    """One target's search: the result (front, pick, notes), where its files are, and the verified pick
    (None with verify_top=0) whose converted file the package writer takes. Close it (or use `with`)
    once the package is written: that removes the pick's temporary folder."""

    result: SearchResult
    files: SearchFiles
    pick: VerifiedPick | None

    def close(self) -> None:
        if self.pick is not None:
            self.pick.close()

    def __enter__(self) -> SearchOutcome:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def load_latency(run: Run, profile: TargetProfile) -> LatencyModel:
    """The target's latency model for `run`; FactoryError saying how to make it when missing or stale."""
    from targets.latency import load_latency_model

    try:
        return load_latency_model(run.path, profile, space=run.space, num_classes=run.num_classes)
    except ValueError as exc:  # LatencyTableError: missing or measured under other settings
        raise FactoryError(str(exc)) from None


def require_predictor(run: Run) -> AccuracyPredictor:
    """The run's accuracy predictor; UserInputError (exit 2) saying how to fit one when there is none."""
    from factory.predictor.model import load_predictor

    predictor = load_predictor(run.path, run.space, run.checkpoint_sha256)
    if predictor is None:
        raise UserInputError(f"{run.path}: no accuracy predictor (predictor.pt); fit one first with "
                             f"`factory predictor fit --run {run.path}` (`factory specialize` fits one itself)")
    return predictor


def known_candidates(run: Run, predictor: AccuracyPredictor, latency: LatencyModel,
                     budgets: Constraints) -> list[tuple[Candidate, float]]:
    """Every sub-network whose accuracy the predictor fit already measured on the whole validation split
    (the uniform grid among them), as candidates with their measured accuracy, for the verification."""
    from factory.predictor.samples import SAMPLES_FILE, read_samples

    samples = read_samples(run.path / SAMPLES_FILE, run.space, run.checkpoint_sha256, images=len(run.dataset().val))
    archs = list(samples)
    preds = CandidateEvaluator(predictor, latency)(archs)
    return [(Candidate(a, p, check_budgets(budgets, p)), samples[a].accuracy)
            for a, p in zip(archs, preds, strict=True)]


def infeasible_message(result: SearchResult, target: str) -> str:
    c = result.closest
    head = (f"target {target!r} is infeasible: none of the {result.unique_evaluations} sub-networks evaluated "
            f"({result.population} x {result.generations} generations) meets every budget "
            f"{result.budgets.to_dict()}")
    if c is None:
        return head
    return (f"{head}. Closest candidate: {arch_label(c.arch)} (predicted accuracy {c.predicted.accuracy:.4f}, "
            f"p50 {c.predicted.latency_p50_ms:.4g} ms, size {c.predicted.size_mb:.4g} MB); it misses "
            f"{c.describe_misses()}")


def run_search(
    run: Run | str | Path,
    profile: TargetProfile,
    population: int = 100,
    generations: int = 100,
    seed: int = 0,
    verify_top: int = 3,
    out: Path | None = None,
    map_fn: MapFn = map,
    latency: LatencyModel | None = None,
    predictor: AccuracyPredictor | None = None,
) -> SearchOutcome:
    """Search `profile` on `run` (a path or a loaded Run); verify the top `verify_top` candidates for real
    (0 = trust the predictions); write the files at `out` (see `SearchFiles.at`). `latency` and
    `predictor` are loaded from the run when not given. UserInputError without a predictor;
    InfeasibleTargetError (exit 3) when nothing fits: pareto.json/png are still written, with the
    closest candidate."""
    from factory.run import Run, load_run
    from factory.search.pick import VerifyConfig, verify_pick

    run = run if isinstance(run, Run) else load_run(run)
    latency = latency if latency is not None else load_latency(run, profile)
    predictor = predictor if predictor is not None else require_predictor(run)
    result = search(run.space, predictor, latency, profile, population=population, generations=generations,
                    seed=seed, map_fn=map_fn)
    files = SearchFiles.at(out, run.path, profile.name)
    info = {"target": profile.to_dict(), "run": str(run.path), "checkpoint_sha256": run.checkpoint_sha256,
            "predictor": {"kind": "boosted-trees", "holdout_spearman": predictor.spearman,
                          "train": predictor.meta.get("train"), "holdout": predictor.meta.get("holdout")}}
    pick = None
    uniform = {run.space.canonical(a) for a in run.space.uniform_grid()}
    known = known_candidates(run, predictor, latency, result.budgets)
    baselines = [(c, acc) for c, acc in known if run.space.canonical(c.arch) in uniform]
    try:
        if result.chosen is None:
            raise InfeasibleTargetError(infeasible_message(result, profile.name))
        if verify_top > 0:
            pick = verify_pick(run, profile, result, VerifyConfig(top=verify_top), known=known)
            result = pick.result
        else:
            result = replace(result, notes=[*result.notes, "--verify-top 0: the pick is predicted, not measured"])
    except InfeasibleTargetError:  # no pick: pareto.json says so ("chosen": null), no pick.json
        write_search_files(replace(result, chosen=None), files, profile.name, info, baselines)
        raise
    try:
        write_search_files(result, files, profile.name, info, baselines)
    except BaseException:
        if pick is not None:
            pick.close()
        raise
    return SearchOutcome(result, files, pick)


__all__ = ["SearchOutcome", "infeasible_message", "known_candidates", "load_latency", "require_predictor",
           "run_search"]
