"""Two trained runs side by side: their sub-networks' accuracy and how well each run's predictor ranks them.

For each run (both must have a fitted predictor.pt, e.g. from `factory demo`):
- validation accuracy of the largest and smallest sub-network and of 60 stratified random ones (the
  same 60 for both runs, so the difference is paired);
- held-out Spearman of the run's predictor on 200 fresh stratified sub-networks that are not among its
  measured samples (the demo's own figure uses 50, too few to compare two runs: its interval is wide).

    .venv/bin/python bench/supernet_compare.py runs/three-per-step runs/two-per-step

Used for issue 17's change of the demo preset (two sub-networks per elastic step instead of three).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from factory.evaluate import evaluate_on
from factory.predictor.model import load_predictor
from factory.predictor.samples import SAMPLES_FILE, stratified_archs
from factory.run import load_run


def measured_archs(run_dir: Path) -> set[str]:
    lines = (run_dir / SAMPLES_FILE).read_text().splitlines()
    return {json.dumps(json.loads(line)["arch"], sort_keys=True) for line in lines if line.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs=2, type=Path)
    parser.add_argument("--subnets", type=int, default=60, help="stratified random sub-networks (paired)")
    parser.add_argument("--holdout", type=int, default=200, help="fresh sub-networks scoring each predictor")
    args = parser.parse_args()
    accs = {}
    for run_dir in args.runs:
        run = load_run(run_dir)
        ds = run.dataset()

        def acc(arch, run=run, ds=ds) -> float:
            return evaluate_on(run.supernet, arch, ds.calib, ds.val, run.mean, run.std).accuracy

        mids = stratified_archs(run.space, args.subnets, random.Random(123))
        accs[run_dir] = np.array([acc(a) for a in mids])
        predictor = load_predictor(run_dir, run.space)
        if predictor is None:
            raise SystemExit(f"{run_dir}: no predictor.pt (run `factory predictor fit --run {run_dir}`)")
        seen = measured_archs(run_dir)
        fresh = [a for a in stratified_archs(run.space, 2 * args.holdout, random.Random(999))
                 if json.dumps(a.to_dict(), sort_keys=True) not in seen][: args.holdout]
        truth = [acc(a) for a in fresh]
        rho = spearmanr(predictor(fresh), truth).statistic
        big, small = acc(run.space.largest()), acc(run.space.smallest())
        print(f"{run_dir}: largest {big * 100:.2f}%  smallest {small * 100:.2f}%"
              f"  {args.subnets} random: mean {accs[run_dir].mean() * 100:.2f}% (min {accs[run_dir].min() * 100:.2f})"
              f"  | predictor on {len(fresh)} fresh sub-networks: Spearman {rho:.3f}"
              f" (accuracy sd {np.std(truth) * 100:.2f} points)", flush=True)
    a, b = args.runs
    d = accs[b] - accs[a]
    rng = np.random.default_rng(0)
    boot = [rng.choice(d, len(d)).mean() for _ in range(4000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    verdict = "tie" if lo <= 0 <= hi else ("second better" if lo > 0 else "first better")
    print(f"paired difference on the {args.subnets} random sub-networks (second - first): {d.mean() * 100:+.2f} points "
          f"[{lo * 100:+.2f}, {hi * 100:+.2f}] (95% bootstrap): {verdict}")


if __name__ == "__main__":
    main()
