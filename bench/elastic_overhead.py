"""Elastic overhead: training-step time of the supernet with a fixed arch active vs the extracted
static model (goal <= 1.3), and cost() calls per second (goal >= 50,000). Side by side, interleaved,
median of rounds: this machine is noisy.

    .venv/bin/python bench/elastic_overhead.py [--batch 64] [--rounds 7] [--steps 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from supernets import Supernet, cost, get_space


def step_time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    space = get_space()
    rng = random.Random(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}")
    for label, arch in (("largest", space.largest()), ("smallest", space.smallest()), ("random", space.sample(rng))):
        net = Supernet(space, 10).train()
        net.set_active(arch)
        static = net.extract(arch).train()
        # channels_last is what the trainer uses on CPU: oneDNN's NCHW depthwise 7x7 is ~10x slower
        net = net.to(memory_format=torch.channels_last)
        static = static.to(memory_format=torch.channels_last)
        x = torch.randn(args.batch, 3, arch.resolution, arch.resolution).to(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (args.batch,))
        step_time(net, x, y, 2)
        step_time(static, x, y, 2)
        ratios, sup, sta = [], [], []
        for _ in range(args.rounds):
            a = step_time(net, x, y, args.steps)
            b = step_time(static, x, y, args.steps)
            sup.append(a)
            sta.append(b)
            ratios.append(a / b)
        print(f"{label:>8}: supernet {statistics.median(sup) * 1e3:7.2f} ms/step  static "
              f"{statistics.median(sta) * 1e3:7.2f} ms/step  ratio (median of {args.rounds}) "
              f"{statistics.median(ratios):.3f}  (goal <= 1.3)")

    archs = [space.sample(rng) for _ in range(20000)]
    cost(space, archs[0])
    rates = []
    for _ in range(5):
        start = time.perf_counter()
        for a in archs:
            cost(space, a)
        rates.append(len(archs) / (time.perf_counter() - start))
    print(f"cost(): {statistics.median(rates):,.0f} calls/s (median of 5 x {len(archs)}; goal >= 50,000)")


if __name__ == "__main__":
    main()
