"""Search speed: NSGA-II population x generations per target (goal: 100 x 100 in <= 10 s on 2 cores),
with candidates evaluated per second.

Inputs: with --run, the run's accuracy predictor (predictor.pt) and each target's real latency table
(runs/<run>/latency/<target>.json; targets without a table are skipped and named). Without --run,
stand-ins from supernets.cost (MACs-based latency, synthetic accuracy) on two synthetic budgets.
The machine is shared: treat the times as upper bounds.

    .venv/bin/python bench/search_speed.py [--run runs/demo] [--targets all|a,b] [--population 100]
        [--generations 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory.search.engine import search


@dataclass(frozen=True)
class BenchTarget:
    name: str
    space: Any
    accuracy_fn: Any
    latency_model: Any
    profile: Any
    inputs: str


def load_targets(run_dir: str | None, targets: str) -> list[BenchTarget]:
    """The (accuracy, latency, budgets) inputs of each target: real ones from a run, else proxies."""
    if run_dir is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test stand-ins live there
        from search_proxies import CostLatencyModel, SyntheticAccuracy

        from supernets import get_space
        from targets.profile import Constraints, TargetProfile

        space = get_space()
        acc, lat = SyntheticAccuracy(space), CostLatencyModel(space)
        what = "proxies: MACs-based latency, synthetic accuracy (no --run)"
        def proxy(name: str, **budgets: float) -> TargetProfile:
            return TargetProfile(name, "onnxruntime", "fp32", constraints=Constraints(**budgets))

        return [BenchTarget("proxy-latency", space, acc, lat, proxy("proxy-latency", latency_p50_ms=0.3), what),
                BenchTarget("proxy-latency-size", space, acc, lat,
                            proxy("proxy-latency-size", latency_p50_ms=0.5, size_mb=6.0), what)]
    from factory.predictor.model import load_predictor
    from factory.run import load_run
    from targets.latency import load_latency_model
    from targets.profile import builtin_profiles, get_profile

    run = load_run(run_dir)
    predictor = load_predictor(run.path, run.space, run.checkpoint_sha256)
    if predictor is None:
        raise SystemExit(f"{run_dir}: no predictor.pt; fit one with `factory predictor fit --run {run_dir}`")
    profiles = list(builtin_profiles().values()) if targets == "all" else [get_profile(t) for t in targets.split(",")]
    out = []
    for prof in profiles:
        try:
            lat = load_latency_model(run.path, prof, space=run.space, num_classes=run.num_classes)
        except ValueError as exc:
            print(f"skip {prof.name}: {exc}")
            continue
        what = f"{run_dir}: predictor.pt (Spearman {predictor.spearman:.3f}) + latency/<target>.json tables"
        out.append(BenchTarget(prof.name, run.space, predictor, lat, prof, what))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None)
    parser.add_argument("--targets", default="all")
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    items = load_targets(args.run, args.targets)
    print(f"inputs: {items[0].inputs if items else 'none'}")
    print(f"{'target':<22} {'seconds':>8} {'evals':>7} {'unique':>7} {'cand/s':>8} {'front':>6}  pick "
          f"(pred. acc / p50 ms)  goal <= 10 s")
    for t in items:
        t0 = time.perf_counter()
        r = search(t.space, t.accuracy_fn, t.latency_model, t.profile, args.population, args.generations, args.seed)
        sec = time.perf_counter() - t0
        pick = r.chosen or r.closest
        pick_s = "none" if pick is None else (f"{100 * pick.predicted.accuracy:.2f}% / "
                                              f"{pick.predicted.latency_p50_ms:.3f}"
                                              + ("" if r.chosen else " (infeasible: closest)"))
        print(f"{t.name:<22} {sec:8.2f} {r.evaluations:7d} {r.unique_evaluations:7d} {r.evaluations / sec:8.0f} "
              f"{len(r.feasible):6d}  {pick_s:<28} {'ok' if sec <= 10 else 'SLOW'}")


if __name__ == "__main__":
    main()
