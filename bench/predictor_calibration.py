"""The predictor fitted on measurements whose BN recalibration used fewer calibration images, on the same trained
run, in one run: measuring time of each fit, and each predictor's Spearman on fresh sub-networks measured the
way the project defines a sub-network's accuracy (all calibration images, every validation image), with a
paired bootstrap interval of each difference to the all-images fit.

    .venv/bin/python bench/predictor_calibration.py runs/demo [--calib 300 150 100] [--fresh 200]

Each fit starts from a copy of the run without measurements (RUN/bench-calib/<n>) and measures with
`fit_predictor(calib_images=n)` (a fixed random subset of n calibration images; all of them when n is the split's
size). The fresh sub-networks are not among any fit's samples. Used for issue 17 (docs/decisions.md).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from factory.evaluate import evaluate_on, on_device
from factory.predictor.fit import fit_predictor
from factory.predictor.model import load_predictor
from factory.predictor.samples import SAMPLES_FILE, stratified_archs
from factory.run import load_run
from supernets.arch import ArchConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor_screen import fresh_copy  # the bench folder is not a package: imported by path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--calib", type=int, nargs="+", default=[300, 150, 100])
    parser.add_argument("--samples", type=int, default=450)
    parser.add_argument("--fresh", type=int, default=200, help="fresh sub-networks scoring the predictors")
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="the fits' seed (sampling, fit, calibration subset)")
    args = parser.parse_args()
    fits = {}
    for n in args.calib:
        path = fresh_copy(args.run, str(n), folder="bench-calib")
        report = fit_predictor(path, samples=args.samples, progress=False, calib_images=n, seed=args.seed)
        fits[n] = (path, report)
        print(f"calib {n}: {report.samples} measured in {report.measure_seconds:.1f} s; held-out Spearman "
              f"{report.holdout_spearman:.3f} on its {report.holdout}", flush=True)
    run = load_run(args.run)
    ds = run.dataset()
    seen = {run.space.canonical(ArchConfig.from_dict(json.loads(line)["arch"]))
            for path, _ in fits.values() for line in (path / SAMPLES_FILE).read_text().splitlines() if line.strip()}
    pool = stratified_archs(run.space, 3 * args.fresh, random.Random(991), run.num_classes)
    fresh = [a for a in pool if a not in seen][: args.fresh]
    start = time.perf_counter()
    with on_device(run.supernet, torch.device("cpu")):
        truth = np.array([evaluate_on(run.supernet, a, ds.calib, ds.val, run.mean, run.std).accuracy for a in fresh])
    print(f"{len(fresh)} fresh sub-networks measured on all {len(ds.calib)} calibration and {len(ds.val)} "
          f"validation images in {time.perf_counter() - start:.0f} s")
    preds = {n: np.asarray(load_predictor(path, run.space, run.checkpoint_sha256)(fresh))
             for n, (path, _) in fits.items()}
    base = args.calib[0]
    rng = np.random.default_rng(0)
    boots = {n: [] for n in args.calib[1:]}
    for _ in range(args.boot):
        idx = rng.integers(0, len(fresh), len(fresh))
        ref = spearmanr(preds[base][idx], truth[idx]).statistic
        for n in boots:
            boots[n].append(spearmanr(preds[n][idx], truth[idx]).statistic - ref)
    print("| calibration images | measuring (s) | Spearman on fresh | difference to the first [95% bootstrap] |")
    print("|---|---|---|---|")
    for n, (_, report) in fits.items():
        rho = spearmanr(preds[n], truth).statistic
        diff = ""
        if n in boots:
            lo, hi = np.percentile(boots[n], [2.5, 97.5])
            d = rho - spearmanr(preds[base], truth).statistic
            diff = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]{' tie' if lo <= 0 <= hi else ''}"
        print(f"| {n} | {report.measure_seconds:.0f} | {rho:.3f} | {diff} |")


if __name__ == "__main__":
    main()
