"""Progressive shrinking vs training alone: is the smallest sub-network of the supernet (no fine-tuning,
BN recalibrated) better than the same architecture trained from scratch for the same wall-clock time
the whole supernet took to train? (OFA's claim: yes.)

    python bench/ps_vs_scratch.py --run runs/demo [--seconds S] [--seed 0]

Both are scored on the run's test split (95% Wilson intervals; the difference by paired bootstrap, a tie
when its interval holds 0); the scratch run's partial figures while training are on validation.
The scratch budget defaults to the run's `elapsed_seconds` (summary.json / last metrics line). On a
shared machine both timings are upper bounds; the comparison is only fair if the load was similar.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from exports.intervals import AccuracyEstimate, paired_difference
from factory.data import to_model_input
from factory.evaluate import calibrated_subnet
from factory.run import METRICS_FILE, SUMMARY_FILE, load_run
from factory.training.sampling import derive_seed
from factory.training.trainer import cosine_schedule, random_shift
from supernets import Supernet


def supernet_seconds(run_dir: Path, clock: str) -> float:
    """The supernet's training time: wall-clock (`elapsed_seconds`) or process CPU time (`cpu_seconds`)."""
    key = "elapsed_seconds" if clock == "wall" else "cpu_seconds"
    summary = run_dir / SUMMARY_FILE
    data = json.loads(summary.read_text()) if summary.exists() else \
        json.loads((run_dir / METRICS_FILE).read_text().splitlines()[-1])
    if key not in data:
        raise SystemExit(f"{run_dir}: no {key} recorded; pass --seconds")
    return float(data[key])


def train_scratch(run, arch, seconds: float, seed: int, clock=time.monotonic, batch: int = 64,
                  lr: float = 0.3) -> tuple[torch.nn.Module, int]:
    """Train the static architecture alone (same recipe as the demo teacher: SGD Nesterov, cosine,
    label smoothing, random shifts) until `seconds` have passed on `clock`."""
    ds = run.dataset()
    torch.manual_seed(seed)
    net = Supernet(run.space, run.num_classes).extract(arch).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=3e-5)
    n = len(ds.train)
    gen = torch.Generator().manual_seed(seed)

    def step(i: int) -> None:
        idx = torch.randint(0, n, (batch,), generator=gen)
        images = random_shift(ds.train.images[idx], 2, torch.Generator().manual_seed(derive_seed(seed, i)))
        x = to_model_input(images, arch.resolution, run.mean, run.std).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(net(x), ds.train.labels[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def set_lr(factor: float) -> None:
        for g in opt.param_groups:
            g["lr"] = lr * factor

    start = clock()
    for i in range(10):  # warm-up steps also measure the step time that sizes the cosine schedule
        set_lr((i + 1) / 31)
        step(i)
    per_step = (clock() - start) / 10
    total = max(11, int(seconds / per_step))
    schedule = cosine_schedule(total, 30)
    i = 10
    marks = [seconds * f for f in (0.25, 0.5, 0.75)]
    while clock() - start < seconds and i < total:
        set_lr(schedule(i))
        step(i)
        i += 1
        if marks and clock() - start >= marks[0]:  # partial results, in case the budget cannot finish
            marks.pop(0)
            acc = accuracy(net.eval(), run, arch)
            print(f"  ... scratch after {clock() - start:.0f} s ({i} steps): {acc * 100:.2f}%", flush=True)
            net.train()
    return net.eval(), i


@torch.no_grad()
def hits(net, run, arch, split: str = "val") -> torch.Tensor:
    part = getattr(run.dataset(), split)
    x = to_model_input(part.images, arch.resolution, run.mean, run.std).contiguous(memory_format=torch.channels_last)
    return net(x).argmax(1) == part.labels


def accuracy(net, run, arch) -> float:
    return float(hits(net, run, arch).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo")
    parser.add_argument("--seconds", type=float, default=None, help="scratch budget (default: the run's time)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall = same wall-clock time; cpu = same process CPU time (fairer on a loaded machine; "
                             "run both with the same thread count)")
    args = parser.parse_args()
    run = load_run(args.run)
    arch = run.space.smallest()
    budget = args.seconds if args.seconds is not None else supernet_seconds(Path(args.run), args.clock)
    clock = time.monotonic if args.clock == "wall" else time.process_time
    if len(run.dataset().test) == 0:
        raise SystemExit(f"{run.path}: no test split (a run made before the factory held one out); train it again")
    ps_net = calibrated_subnet(run, arch).eval()
    ps_hits = hits(ps_net, run, arch, "test").numpy()
    print(f"progressive shrinking, smallest sub-network: {AccuracyEstimate.of(ps_hits)}; scratch budget {budget:.0f} s "
          f"({args.clock})", flush=True)
    net, steps = train_scratch(run, arch, budget, args.seed, clock)
    scratch_hits = hits(net, run, arch, "test").numpy()
    diff = paired_difference(ps_hits, scratch_hits)
    print(f"smallest sub-network (resolution {arch.resolution}, depths {list(arch.depths)}, kernel 3, expand 3), "
          f"{len(run.dataset().test)} test images")
    print(f"  progressive shrinking (supernet, BN recalibrated, no fine-tuning): {AccuracyEstimate.of(ps_hits)}")
    print(f"  trained alone from scratch for {budget:.0f} s {args.clock} ({steps} steps of 64): "
          f"{AccuracyEstimate.of(scratch_hits)}")
    verdict = {"a better": "PS better", "b better": "scratch better", "tie": "tie"}[diff.verdict]
    print(f"  difference PS - scratch: {diff.difference * 100:+.2f} points [{diff.low * 100:+.2f}, "
          f"{diff.high * 100:+.2f}] (paired bootstrap 95%): {verdict}")


if __name__ == "__main__":
    main()
