"""NSGA-II vs random search with the same number of evaluations, per target, averaged over seeds:
hypervolume of the feasible front (fixed reference point) and best feasible predicted accuracy.
NSGA-II should be at least as good on both.

Reference point (minimisation form: -accuracy, latency[, size]): accuracy 0, the target's latency
budget (else 1.1 x the largest sub-network's latency) and, for 3-objective targets, its size budget.
Random search gets as many samples as NSGA-II made fitness evaluations (>= its distinct archs), which
favours random search slightly. Inputs: as bench/search_speed.py (a run's predictor + real latency
tables with --run, else cost-based stand-ins).

    .venv/bin/python bench/search_vs_random.py [--run runs/demo] [--targets all|a,b] [--seeds 3]
        [--population 100] [--generations 100]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from search_speed import BenchTarget, load_targets

from factory.search.engine import SearchResult, random_search, search


def hypervolume(result: SearchResult, ref: np.ndarray) -> float:
    """Hypervolume dominated by the feasible front, bounded by `ref` (all objectives minimised)."""
    import moocore

    pts = np.array([[-c.predicted.accuracy, *(c.predicted.value(o) for o in result.objectives[1:])]
                    for c in result.feasible]).reshape(-1, len(result.objectives))
    pts = pts[(pts < ref).all(1)]
    return float(moocore.hypervolume(pts, ref=ref)) if len(pts) else 0.0


def reference_point(t: BenchTarget, objectives: tuple[str, ...]) -> np.ndarray:
    c = t.profile.constraints
    largest = t.space.largest()
    lat = c.latency_p50_ms if c.latency_p50_ms is not None else 1.1 * t.latency_model.predict(largest)
    ref = [0.0, lat]
    if "size_mb" in objectives:
        ref.append(c.size_mb if c.size_mb is not None else 1.1 * t.latency_model.size_mb(largest))
    return np.array(ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None)
    parser.add_argument("--targets", default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", type=int, default=100)
    parser.add_argument("--generations", type=int, default=100)
    args = parser.parse_args()
    items = load_targets(args.run, args.targets)
    print(f"inputs: {items[0].inputs if items else 'none'}; {args.population} x {args.generations}, "
          f"seeds 0..{args.seeds - 1}")
    print(f"{'target':<22} {'evals':>6} {'HV nsga2':>10} {'HV random':>10} {'ratio':>6} "
          f"{'best acc nsga2':>15} {'best acc random':>16}  verdict")
    for t in items:
        hv_n, hv_r, acc_n, acc_r, evals = [], [], [], [], []
        for seed in range(args.seeds):
            n = search(t.space, t.accuracy_fn, t.latency_model, t.profile, args.population, args.generations, seed)
            r = random_search(t.space, t.accuracy_fn, t.latency_model, t.profile, n.evaluations, seed)
            ref = reference_point(t, n.objectives)
            hv_n.append(hypervolume(n, ref))
            hv_r.append(hypervolume(r, ref))
            acc_n.append(n.chosen.predicted.accuracy if n.chosen else float("nan"))
            acc_r.append(r.chosen.predicted.accuracy if r.chosen else float("nan"))
            evals.append(n.evaluations)
        hn, hr = statistics.mean(hv_n), statistics.mean(hv_r)
        an, ar = statistics.mean(acc_n), statistics.mean(acc_r)
        verdict = "ok" if hn >= hr and not an < ar else "NSGA-II WORSE"
        ratio = hn / hr if hr else float("inf")
        print(f"{t.name:<22} {statistics.mean(evals):6.0f} {hn:10.5g} {hr:10.5g} {ratio:6.3f} "
              f"{100 * an:14.3f}% {100 * ar:15.3f}%  {verdict}")


if __name__ == "__main__":
    main()
