"""Timed runs per round for latency tables: does the table's fit change with fewer runs per model and round?

For each target, the probe models are exported once and timed four times in the tables' method (15
interleaved rounds), alternating the runs per round: A (50), B (fewer), C (50), D (fewer), so slow drifts
of the host hit both settings alike. Printed per target: wall seconds of each pass; the median relative
difference of the per-model p50s between the two 50-run passes (the host's own repeatability), between
fewer and 50, and between the two fewer-run passes; and each pass's 5-fold cross-validated fit (share
within +-10%, Spearman), the figure the table reports.

    .venv/bin/python bench/timing_repeats.py [--targets edge-openvino,phone-int8,server-onnx] [--fewer 30]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from supernets import get_space
from supernets.arch import ArchConfig
from targets.measure import measure_files_rounds
from targets.probe import write_probe_bundle
from targets.profile import builtin_profiles
from targets.table import cross_validate, latency_design


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="edge-openvino,phone-int8,server-onnx")
    parser.add_argument("--fewer", type=int, default=30)
    args = parser.parse_args()
    space = get_space()
    rows = []
    for name in args.targets.split(","):
        profile = builtin_profiles()[name]
        with tempfile.TemporaryDirectory() as tmp:
            manifest = json.loads(write_probe_bundle(profile, space, 10, Path(tmp) / "b", progress=False).read_text())
            files = [Path(tmp) / "b" / m["file"] for m in manifest["models"]]
            x = np.stack([latency_design(space, ArchConfig.from_dict(m["arch"])) for m in manifest["models"]])
            passes = {}
            for label, repeats in (("A50", 50), (f"B{args.fewer}", args.fewer), ("C50", 50),
                                   (f"D{args.fewer}", args.fewer)):
                start = time.perf_counter()
                timed = measure_files_rounds(files, profile.threads, runtime=profile.runtime, repeats=repeats)
                p50 = np.array([p for p, _ in timed.timings])
                passes[label] = (p50, time.perf_counter() - start, cross_validate(x, p50))
        (a, _, _), (b, _, _), (c, _, _), (d, _, _) = passes.values()

        def med(u: np.ndarray, v: np.ndarray) -> float:
            return float(np.median(np.abs(u / v - 1))) * 100

        cv = "; ".join(f"{k} {int(s)} s, CV {f['within_10pct'] * 100:.0f}% / {f['spearman']:.3f}"
                       for k, (_, s, f) in passes.items())
        rows.append(f"| {name} | {med(a, c):.1f}% | {med(b, a):.1f}% / {med(d, c):.1f}% | {med(b, d):.1f}% | {cv} |")
    n = args.fewer
    print(f"| target | 50 vs 50 | {n} vs 50 (B/A, D/C) | {n} vs {n} | passes: wall, fit CV |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
