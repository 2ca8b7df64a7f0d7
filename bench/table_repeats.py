"""How many timed runs per round a latency table needs: real tables timed with the default repeats (A) and with
fewer (B), in the order A, B, check, B, A (so drift over the run hits both alike), each scored on a separate
check set of sub-networks timed in the middle with the default plan. Reported per table: the timing seconds,
the median and 90th percentile of |predicted - measured| / measured on the check set, the share within
+-10%, and the Spearman of predicted against measured; and how far the two A tables and the two B tables
disagree with each other on the check set (the swing between two measurements of the same kind).

    .venv/bin/python bench/table_repeats.py [--targets server-onnx] [--repeats 25] [--check 40]

Used for issue 17 (docs/decisions.md).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from exports import timing
from supernets import get_space
from supernets.arch import ArchConfig
from targets.latency import LatencyModel
from targets.measure import table_rounds
from targets.probe import DEFAULT_SAMPLES, write_probe_bundle
from targets.profile import get_profile
from targets.table import Measurement, fit_table


def timed(files: list[Path], threads: int, rounds: int, repeats: int, seed: int) -> tuple[list[float], float]:
    """p50 (ms) of each file, timed as a table times its probes (exports.timing.time_interleaved)."""
    rng = np.random.default_rng(seed)
    runners = [timing.load_runner(p, threads, rng) for p in files]
    canary = timing.load_canary(files, threads, rng)
    start = time.perf_counter()
    result = timing.time_interleaved(runners, repeats=repeats, rounds=rounds, seed=seed, canary=canary)
    return [p50 for p50, _ in result.timings], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="server-onnx")
    parser.add_argument("--repeats", type=int, default=25, help="timed runs per round of the B tables")
    parser.add_argument("--check", type=int, default=40, help="sub-networks in the check set")
    args = parser.parse_args()
    space = get_space()
    print("| target | table | timing s | median error | p90 error | within 10% | Spearman |")
    print("|---|---|---|---|---|---|---|")
    for name in args.targets.split(","):
        profile = get_profile(name)
        rounds = table_rounds(profile.threads)
        with tempfile.TemporaryDirectory() as tmp:
            manifests = {}
            for kind, samples, seed in (("probes", DEFAULT_SAMPLES[profile.runtime], 0), ("check", args.check, 7)):
                bundle = Path(tmp) / kind
                manifests[kind] = (bundle, json.loads(write_probe_bundle(profile, space, 10, bundle, samples=samples,
                                                                         seed=seed, progress=False).read_text()))
            files = {k: [b / m["file"] for m in man["models"]] for k, (b, man) in manifests.items()}
            plan = [("A", timing.DEFAULT_REPEATS), ("B", args.repeats), ("check", timing.DEFAULT_REPEATS),
                    ("B", args.repeats), ("A", timing.DEFAULT_REPEATS)]
            results = []
            for i, (label, repeats) in enumerate(plan):
                p50s, seconds = timed(files["check" if label == "check" else "probes"], profile.threads, rounds,
                                      repeats, seed=i)
                results.append((label, repeats, p50s, seconds))
        check_p50 = np.array(next(p for label, _, p, _ in results if label == "check"))
        check_archs = [ArchConfig.from_dict(m["arch"]) for m in manifests["check"][1]["models"]]
        predictions: dict[str, list[np.ndarray]] = {"A": [], "B": []}
        for label, repeats, p50s, seconds in results:
            if label == "check":
                continue
            ms = [Measurement(ArchConfig.from_dict(m["arch"]), p50, p50, int(m["size_bytes"]))
                  for m, p50 in zip(manifests["probes"][1]["models"], p50s, strict=True)]
            model = LatencyModel(fit_table(space, 10, profile, ms, machine={}, date="", method={}), space, 10,
                                 profile.precision)
            predicted = np.array([model.predict(a) for a in check_archs])
            predictions[label].append(predicted)
            error = np.abs(predicted - check_p50) / check_p50
            print(f"| {name} | {label} ({repeats} runs x {rounds} rounds) | {seconds:.1f} | "
                  f"{100 * np.median(error):.1f}% | {100 * np.percentile(error, 90):.1f}% | "
                  f"{np.mean(error <= 0.10):.2f} | {spearmanr(predicted, check_p50).statistic:.3f} |", flush=True)
        for label, (first, second) in predictions.items():
            swing = np.abs(first - second) / second
            print(f"| {name} | swing {label} vs {label} | | {100 * np.median(swing):.1f}% | "
                  f"{100 * np.percentile(swing, 90):.1f}% | | |")


if __name__ == "__main__":
    main()
