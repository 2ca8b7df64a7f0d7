"""How many timing rounds a latency table needs: the same probe files timed in two full passes, one after the
other, and tables fitted from the first k clean rounds of each pass. For each k: the fit's 5-fold CV (share
within +-10%), and how far the two passes' tables disagree on 400 random sub-networks (median and 90th
percentile of |A - B| / B of the predicted p50): the "swing" between two measurements that fewer rounds
were once seen to widen. Both passes time the same files with the project's timing code, in one run.

    .venv/bin/python bench/table_rounds.py [--targets edge-openvino,phone-int8,server-onnx] [--rounds 15]

Used for issue 17 (docs/decisions.md).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from exports import timing
from supernets import get_space
from supernets.arch import ArchConfig
from targets.latency import LatencyModel
from targets.probe import DEFAULT_SAMPLES, write_probe_bundle
from targets.profile import get_profile
from targets.table import Measurement, fit_table


def timed_pass(runners, canary, rounds: int, seed: int) -> list[tuple[bool, list[np.ndarray]]]:
    """`rounds` shuffled rounds as exports.timing.time_interleaved times them, each round's runs kept."""
    rng = random.Random(seed)
    plan = timing._run_plan(runners, timing.DEFAULT_WARMUP, timing.DEFAULT_REPEATS)
    order = list(range(len(runners)))
    out = []
    for _ in range(rounds):
        rng.shuffle(order)
        contended = canary is not None and timing.is_contended(canary)
        figures = [np.empty(0)] * len(runners)
        for i in order:
            figures[i] = timing._timed_runs(runners[i], *plan[i])
        contended = contended or (canary is not None and timing.is_contended(canary))
        out.append((not contended, figures))
    return out


def table_of(profile, space, manifest, rounds_kept) -> LatencyModel:
    clean = [figs for ok, figs in rounds_kept if ok] or [figs for _, figs in rounds_kept]
    ms = []
    for i, m in enumerate(manifest["models"]):
        p50, p95, _ = timing.summarize_rounds([figs[i] for figs in clean])
        ms.append(Measurement(ArchConfig.from_dict(m["arch"]), p50, p95, int(m["size_bytes"])))
    table = fit_table(space, 10, profile, ms, machine={}, date="", method={})
    return table, LatencyModel(table, space, 10, profile.precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="edge-openvino,phone-int8,server-onnx")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ks", default="5,8,10,15")
    args = parser.parse_args()
    space = get_space()
    probe_archs = [space.sample(random.Random(10_000 + i)) for i in range(400)]
    ks = [int(k) for k in args.ks.split(",")]
    print("| target | rounds k | CV within 10% (A / B) | swing A vs B: median | p90 | timing s per pass |")
    print("|---|---|---|---|---|---|")
    for name in args.targets.split(","):
        profile = get_profile(name)
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / "bundle"
            manifest = json.loads(write_probe_bundle(profile, space, 10, bundle,
                                                     samples=DEFAULT_SAMPLES[profile.runtime], progress=False)
                                  .read_text())
            files = [bundle / m["file"] for m in manifest["models"]]
            rng = np.random.default_rng(0)
            runners = [timing.load_runner(p, profile.threads, rng) for p in files]
            canary = timing.load_canary(files, profile.threads, rng)
            passes, seconds = [], []
            for p in range(2):
                start = time.perf_counter()
                passes.append(timed_pass(runners, canary, args.rounds, seed=p))
                seconds.append(time.perf_counter() - start)
        for k in ks:
            (ta, ma), (tb, mb) = (table_of(profile, space, manifest, ps[:k]) for ps in passes)
            a = np.array([ma.predict(x) for x in probe_archs])
            b = np.array([mb.predict(x) for x in probe_archs])
            swing = np.abs(a - b) / b
            cv = [t.fit["p50_cv5"].get("within_10pct", float("nan")) for t in (ta, tb)]
            print(f"| {name} | {k} | {cv[0]:.2f} / {cv[1]:.2f} | {100 * np.median(swing):.1f}% | "
                  f"{100 * np.percentile(swing, 90):.1f}% | {np.mean(seconds) * k / args.rounds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
