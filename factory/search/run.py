"""`run_search`: search one target of a trained run end to end, as `factory search` and `factory
specialize` do: load the latency model and predictor, search, verify the pick, write
runs/<run>/search/<target>/{pareto.json, pareto.png}.

Without a predictor, accuracy is measured directly (BN recalibration + validation, ~1 s per
sub-network), so population and generations are capped (`DIRECT_CAP`) and the result says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from factory.errors import FactoryError, InfeasibleTargetError
from factory.search.engine import Budgets, Candidate, CandidateEvaluator, MapFn, SearchResult, arch_label, search

DIRECT_CAP = (8, 3)  # (population, generations) when accuracy is measured, not predicted
SEARCH_DIR = "search"


@dataclass(frozen=True)
class DirectAccuracy:
    """Slow path: the measured BN-recalibrated accuracy of each sub-network (search caches by arch)."""

    run: Any

    def __call__(self, archs: list) -> list[float]:
        from factory.evaluate import evaluate_arch

        return [evaluate_arch(self.run, a).accuracy for a in archs]


def known_candidates(run: Any, accuracy_fn: Any, latency: Any, budgets: Budgets) -> list[tuple[Candidate, float]]:
    """Every sub-network whose accuracy the predictor fit already measured on the whole validation split
    (the uniform grid among them), as candidates with their measured accuracy, for the verification.
    Without a predictor their measured accuracy stands in for the prediction."""
    from factory.predictor.model import SAMPLES_FILE, read_samples

    samples = read_samples(run.path / SAMPLES_FILE, run.space, run.checkpoint_sha256, images=len(run.dataset().val))
    archs = list(samples)
    if isinstance(accuracy_fn, DirectAccuracy):  # no predictor: do not re-measure what is measured
        def accuracy_fn(batch: list) -> list[float]:
            return [samples[a].accuracy for a in batch]
    preds = CandidateEvaluator(accuracy_fn, latency)(archs)
    return [(Candidate(a, p, budgets.check(p)), samples[a].accuracy) for a, p in zip(archs, preds, strict=True)]


def search_dir(run_dir: Path, target_name: str) -> Path:
    return Path(run_dir) / SEARCH_DIR / target_name


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
    run: Any,
    profile: Any,
    population: int = 100,
    generations: int = 100,
    seed: int = 0,
    verify_top: int = 3,
    out_dir: Path | None = None,
    map_fn: MapFn = map,
) -> SearchResult:
    """Search `profile` on `run` (a path or a loaded factory.run.Run); verify the top `verify_top`
    candidates for real (0 = trust the predictions); write pareto.json/png under `out_dir`
    (default runs/<run>/search/<target>). InfeasibleTargetError (exit 3) when nothing fits: the
    files are still written, with the closest candidate."""
    from factory.predictor.model import load_predictor
    from factory.run import Run, load_run
    from factory.search.pick import VerifyConfig, verify_pick
    from targets.latency import load_latency_model

    if not isinstance(run, Run):
        run = load_run(run)
    try:
        latency = load_latency_model(run.path, profile, space=run.space, num_classes=run.num_classes)
    except ValueError as exc:  # LatencyTableError: missing or measured under other settings
        raise FactoryError(str(exc)) from None
    predictor = load_predictor(run.path, run.space, run.checkpoint_sha256)
    notes: list[str] = []
    if predictor is None:
        accuracy_fn: Any = DirectAccuracy(run)
        capped = (min(population, DIRECT_CAP[0]), min(generations, DIRECT_CAP[1]))
        if capped != (population, generations):
            notes.append(f"no predictor.pt in {run.path}: accuracy measured per sub-network (~1 s each), so "
                         f"population x generations capped from {population} x {generations} to "
                         f"{capped[0]} x {capped[1]}; fit one with `factory predictor fit --run {run.path}`")
        population, generations = capped
        predictor_info: dict[str, Any] = {"kind": "direct (evaluate_arch)"}
    else:
        accuracy_fn = predictor
        predictor_info = {"kind": "mlp-ensemble", "holdout_spearman": predictor.spearman,
                          "train": predictor.meta.get("train"), "holdout": predictor.meta.get("holdout")}
    result = search(run.space, accuracy_fn, latency, profile, population=population, generations=generations,
                    seed=seed, map_fn=map_fn)
    result = replace(result, notes=notes)
    out = Path(out_dir) if out_dir is not None else search_dir(run.path, profile.name)
    info = {"target": profile.to_dict(), "run": str(run.path), "checkpoint_sha256": run.checkpoint_sha256,
            "predictor": predictor_info}
    if result.chosen is None:
        write_outputs(result, out, profile.name, info)
        raise InfeasibleTargetError(infeasible_message(result, profile.name))
    if verify_top > 0:
        try:
            known = known_candidates(run, accuracy_fn, latency, result.budgets)
            result = verify_pick(run, profile, result, VerifyConfig(top=verify_top), known=known)
        except InfeasibleTargetError:
            write_outputs(result, out, profile.name, info)
            raise
    else:
        result = replace(result, notes=[*result.notes, "--no-verify-top: the pick is predicted, not measured"])
    write_outputs(result, out, profile.name, info)
    return result


def write_outputs(result: SearchResult, out: Path, target: str, info: dict[str, Any]) -> tuple[Path, Path]:
    """pareto.json (atomic) and pareto.png."""
    from factory.run import atomic_write_text
    from factory.search.plot import plot_pareto

    out.mkdir(parents=True, exist_ok=True)
    data = {**info, **result.to_dict()}
    json_path = out / "pareto.json"
    atomic_write_text(json_path, json.dumps(data, indent=1) + "\n")
    b = result.budgets.to_dict()
    png = plot_pareto(result, out / "pareto.png", f"{target}: budgets {b or 'none'}")
    return json_path, png
