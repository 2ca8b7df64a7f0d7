"""The predictor fitted with and without the screen (`factory predictor fit --screen / --no-screen`), on the same
trained run, in one run: measuring time of each, and the Spearman of each predictor on fresh sub-networks
measured on every validation image (not among either fit's samples; the fit's own 50 held-out ones are too
few to tell two predictors apart), with a paired bootstrap interval of the difference.

    .venv/bin/python bench/predictor_screen.py runs/demo [--samples 450] [--fresh 200]

Both fits start from a copy of the run without measurements (RUN/bench-screen/{exact,screened}); the fresh
sub-networks are measured once, exactly, in this process. Used for issue 17 (docs/decisions.md).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
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

SKIP = ("predictor.pt", SAMPLES_FILE, "search", "latency", "mlflow.db", "mlartifacts", "bench-*")


def fresh_copy(run_dir: Path, name: str, folder: str = "bench-screen") -> Path:
    """A copy of the run without measurements, predictor, tables or searches, at RUN/folder/name."""
    dst = run_dir / folder / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns(*SKIP))
    return dst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--samples", type=int, default=450)
    parser.add_argument("--fresh", type=int, default=200, help="fresh sub-networks scoring both predictors")
    parser.add_argument("--boot", type=int, default=2000)
    args = parser.parse_args()
    fits = {}
    for name, screen in (("exact", False), ("screened", True)):
        path = fresh_copy(args.run, name)
        start = time.perf_counter()
        report = fit_predictor(path, samples=args.samples, progress=False, screen=screen)
        fits[name] = (path, time.perf_counter() - start, report)
        print(f"{name}: {report.samples} measured in {report.measure_seconds:.1f} s; held-out Spearman "
              f"{report.holdout_spearman:.3f} on its {report.holdout}", flush=True)
    run = load_run(args.run)
    ds = run.dataset()
    seen = {run.space.canonical(ArchConfig.from_dict(json.loads(line)["arch"]))
            for path, _, _ in fits.values() for line in (path / SAMPLES_FILE).read_text().splitlines() if line.strip()}
    pool = stratified_archs(run.space, 3 * args.fresh, random.Random(991), run.num_classes)
    fresh = [a for a in pool if a not in seen][: args.fresh]
    start = time.perf_counter()
    with on_device(run.supernet, torch.device("cpu")):
        truth = np.array([evaluate_on(run.supernet, a, ds.calib, ds.val, run.mean, run.std).accuracy for a in fresh])
    seconds = time.perf_counter() - start
    print(f"{len(fresh)} fresh sub-networks measured on all {len(ds.val)} images in {seconds:.0f} s")
    preds = {name: np.asarray(load_predictor(path, run.space, run.checkpoint_sha256)(fresh))
             for name, (path, _, _) in fits.items()}
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(args.boot):
        idx = rng.integers(0, len(fresh), len(fresh))
        boots.append(spearmanr(preds["screened"][idx], truth[idx]).statistic
                     - spearmanr(preds["exact"][idx], truth[idx]).statistic)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    print("| fit | measuring (s) | sub-networks on all images | on the hard images | Spearman on fresh |")
    print("|---|---|---|---|---|")
    for name, (_, _, report) in fits.items():
        rho = spearmanr(preds[name], truth).statistic
        hard = f"{report.screened} on {len(report.screen.hard)}" if report.screen is not None else "0"
        print(f"| {name} | {report.measure_seconds:.0f} | {report.samples - report.screened} | {hard} | {rho:.3f} |")
    diff = spearmanr(preds["screened"], truth).statistic - spearmanr(preds["exact"], truth).statistic
    print(f"screened - exact: {diff:+.3f} [95% bootstrap {lo:+.3f}, {hi:+.3f}]"
          f"{' (a tie: the interval holds 0)' if lo <= 0 <= hi else ''}; measuring time "
          f"{fits['screened'][2].measure_seconds / fits['exact'][2].measure_seconds:.2f}x")


if __name__ == "__main__":
    main()
