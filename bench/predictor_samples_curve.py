"""How many measured sub-networks the accuracy predictor needs: refit on the first n of a run's measured
samples (the stratified list is prefix-stable, so these are exactly the samples `--samples n` would
measure) and score every fit on the same fresh stratified sub-networks that no fit saw.

    .venv/bin/python bench/predictor_samples_curve.py runs/demo [--sizes 150,250,300,350,450] [--fresh 200]

Reports the Spearman of each fit on the fresh set, and its paired difference to the largest n with a
95% bootstrap interval over the fresh sub-networks (differences inside it are ties).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from factory.evaluate import evaluate_on
from factory.predictor.fit import default_holdout, fit_trees, split_holdout
from factory.predictor.model import load_predictor
from factory.predictor.samples import SAMPLES_FILE, read_samples, stratified_archs
from factory.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--sizes", default="150,250,300,350,450")
    parser.add_argument("--fresh", type=int, default=200)
    parser.add_argument("--no-grid", action="store_true", help="fit without the uniformly scaled sub-networks")
    args = parser.parse_args()
    run = load_run(args.run)
    ds = run.dataset()
    fitted = load_predictor(args.run, run.space, run.checkpoint_sha256)
    screen = ((fitted.meta.get("screen") or {}).get("key")) if fitted is not None else None
    done = read_samples(args.run / SAMPLES_FILE, run.space, run.checkpoint_sha256, len(ds.val), screen)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    listed = stratified_archs(run.space, max(sizes), random.Random(0), run.num_classes)
    missing = [a for a in listed if a not in done]
    if missing:
        raise SystemExit(f"{args.run}: {len(missing)} of the first {max(sizes)} samples are not measured")
    grid = [] if args.no_grid else [
        a for a in dict.fromkeys(run.space.canonical(a) for a in run.space.uniform_grid()) if a not in set(listed)]
    grid = [a for a in grid if a in done]
    cache = args.run / "fresh_holdout.json"
    fresh = [a for a in stratified_archs(run.space, 3 * args.fresh, random.Random(999), run.num_classes)
             if a not in done][: args.fresh]
    if cache.is_file():
        truth = json.loads(cache.read_text())
    else:
        truth = [evaluate_on(run.supernet, a, ds.calib, ds.val, run.mean, run.std).accuracy for a in fresh]
        cache.write_text(json.dumps(truth))
    truth = np.asarray(truth)
    preds = {}
    for n in sizes:
        train_idx, _ = split_holdout(n, default_holdout(n))
        tr = [listed[i] for i in train_idx] + grid
        model = fit_trees(run.space, tr, [done[a].accuracy for a in tr], 0, num_classes=run.num_classes)
        preds[n] = np.asarray(model(fresh))
    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(fresh), len(fresh)) for _ in range(1000)]
    ref = max(sizes)
    print(f"{args.run}: fresh {len(fresh)} sub-networks, grid {len(grid)} joined every fit")
    print(f"| samples (measured) | train | Spearman on fresh | vs n={ref} [95% CI] |")
    print("|---|---|---|---|")
    for n in sizes:
        rho = spearmanr(preds[n], truth).statistic
        diffs = [spearmanr(preds[n][b], truth[b]).statistic - spearmanr(preds[ref][b], truth[b]).statistic
                 for b in boots]
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        print(f"| {n} ({n + len(grid)}) | {len(split_holdout(n, default_holdout(n))[0]) + len(grid)} | {rho:.3f} | "
              f"{rho - spearmanr(preds[ref], truth).statistic:+.3f} [{lo:+.3f}, {hi:+.3f}] |")


if __name__ == "__main__":
    main()
