"""Cost of the predictor's measurements: `evaluate_on` one sub-network at a time (the old way) against the
shared-prefix evaluator in prefix order (`factory.predictor.shared_prefix`, what `factory predictor fit`
uses), on the same sub-networks of a run, alternating in one process. The figures must be equal (the
evaluator is exact), so the held-out Spearman of a fit cannot change; only the time does.

    .venv/bin/python bench/predictor_measurement.py --run runs/demo [--archs 556] [--rounds 2]

The sub-networks are the run's own measured ones (predictor_samples.jsonl), in the order they were drawn.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from factory.evaluate import evaluate_on, on_device
from factory.predictor.samples import SAMPLES_FILE
from factory.predictor.shared_prefix import SharedPrefixEvaluator
from factory.run import load_run
from supernets import ArchConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--archs", type=int, default=200, help="how many of the run's measured sub-networks")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    run = load_run(args.run)
    ds = run.dataset()
    lines = (args.run / SAMPLES_FILE).read_text().splitlines()
    archs = list(dict.fromkeys(run.space.canonical(ArchConfig.from_dict(json.loads(line)["arch"]))
                               for line in lines if line.strip()))[: args.archs]
    print(f"{len(archs)} sub-networks of {args.run}, {len(ds.calib)} calibration + {len(ds.val)} validation images, "
          f"{torch.get_num_threads()} threads")
    with on_device(run.supernet, torch.device("cpu")):
        for r in range(args.rounds):
            start = time.perf_counter()
            old = [evaluate_on(run.supernet, a, ds.calib, ds.val, run.mean, run.std) for a in archs]
            middle = time.perf_counter()
            shared = SharedPrefixEvaluator(run.supernet, ds.calib, ds.val, run.mean, run.std)
            new = {a: shared(a) for a in shared.order(archs)}
            end = time.perf_counter()
            equal = sum(new[a].accuracy == o.accuracy and abs(new[a].loss - o.loss) <= 1e-6 * max(1.0, o.loss)
                        for a, o in zip(archs, old, strict=True))
            print(f"round {r + 1}: one at a time {middle - start:.1f} s ({(middle - start) / len(archs) * 1e3:.0f} ms "
                  f"each), shared prefix {end - middle:.1f} s ({(end - middle) / len(archs) * 1e3:.0f} ms each): "
                  f"{(middle - start) / (end - middle):.2f}x; figures equal for {equal}/{len(archs)}")


if __name__ == "__main__":
    main()
