"""How often the 2-thread contention check fires: its two sides timed one after the other (the check before
the eleventh session) against in alternation (`exports.timing.contention_ratio`, behind is_contended, now), on
the largest server-onnx probe, on a quiet machine, beside a free-running CPU hog, and quiet again, in one run.
A check that fires on a quiet machine sets rounds aside for nothing (and, waited out, costs the demo time); a
check that does not fire beside a hog shows what it cannot catch.

    .venv/bin/python bench/contention_check.py [--checks 100] [--target server-onnx]

Used for issue 17 (docs/decisions.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from exports import timing
from supernets import get_space
from targets.probe import write_probe_bundle
from targets.profile import get_profile


def ratio_one_after_the_other(canary: timing.Canary, warmup: int = 5, repeats: int = 30) -> float:
    """T-thread median / 1-thread median, each side's runs in one block (the earlier check)."""
    many = float(np.median(timing._timed_runs(canary[0], warmup, repeats)))
    one = float(np.median(timing._timed_runs(canary[1], warmup, repeats)))
    return many / one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=100, help="checks of each kind per machine state")
    parser.add_argument("--target", default="server-onnx")
    args = parser.parse_args()
    profile = get_profile(args.target)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = json.loads(write_probe_bundle(profile, get_space(), 10, Path(tmp), samples=5, seed=0,
                                                 progress=False).read_text())
        files = [Path(tmp) / m["file"] for m in manifest["models"]]
        canary = timing.load_canary(files, profile.threads, np.random.default_rng(0))
        assert canary is not None, f"{args.target}: a 1-thread target has no contention check"
        print(f"{args.target}: largest probe, {profile.threads} threads vs 1; threshold {timing.CONTENTION_RATIO}")
        print("| machine | check | fires | ratio p10 / p50 / p90 |")
        print("|---|---|---|---|")
        for state in ("quiet", "one CPU hog", "quiet again"):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if state == "one CPU hog" else None
            time.sleep(0.5)
            ratios: dict[str, list[float]] = {"one after the other": [], "in alternation": []}
            try:
                for _ in range(args.checks):
                    ratios["one after the other"].append(ratio_one_after_the_other(canary))
                    ratios["in alternation"].append(timing.contention_ratio(canary))
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            for kind, values in ratios.items():
                v = np.array(values)
                p10, p50, p90 = np.percentile(v, [10, 50, 90])
                print(f"| {state} | {kind} | {np.mean(v > timing.CONTENTION_RATIO):.0%} | "
                      f"{p10:.2f} / {p50:.2f} / {p90:.2f} |", flush=True)


if __name__ == "__main__":
    main()
