"""Demo training throughput: images/s of the real `Trainer.train_step` under the demo preset, per phase and
weighted by the preset's epochs, next to a torchvision MobileNetV3 of similar MACs trained with the same
batch, resolution and optimizer, on the same host, in one run.

    .venv/bin/python bench/train_throughput.py [--steps 12] [--rounds 3] [--baseline REV]

`--baseline REV` also times the trainer of git revision REV (a worktree under /tmp), old and new in
alternating subprocesses, so both see the same machine load; the ratio is the figure to quote.
Elastic overhead (supernet vs the extracted static network) is bench/elastic_overhead.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("teacher", "kernel", "depth", "expand")


def time_trainer(steps: int, warmup: int) -> dict[str, float]:
    """Seconds per optimizer step of each phase with the demo preset on mnist5k (the code on sys.path)."""
    import torch

    from factory.training.config import load_preset
    from factory.training.distributed import DistContext
    from factory.training.trainer import _build_trainer

    cfg = load_preset("demo")
    ctx = DistContext.from_env("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _build_trainer(cfg, Path(tmp), ctx, None)
    trainer.net.train()
    out: dict[str, float] = {"batch": cfg.train.batch_size, "threads": torch.get_num_threads()}
    for phase, name in enumerate(PHASES):
        trainer.start_phase(phase, None)
        for i in range(warmup + steps):
            if i == warmup:
                start = time.perf_counter()
            trainer.train_step(name)
            trainer.pos.global_step += 1
        out[name] = (time.perf_counter() - start) / steps
        out[f"{name}_epochs"] = cfg.phases[name].epochs
    return out


def time_mobilenet(steps: int, warmup: int, batch: int) -> dict[str, float]:
    """Seconds per step of torchvision's mobilenet_v3_large (random init, 10 classes) at the demo's batch, at
    the input size (multiple of 4) whose MACs are closest to the demo supernet's largest sub-network."""
    import torch
    import torch.nn.functional as F
    from torchvision.models import mobilenet_v3_large

    from supernets import cost, get_space

    space = get_space()
    target = cost(space, space.largest(), 10).macs
    net = mobilenet_v3_large(num_classes=10)
    resolution = min(range(28, 129, 4), key=lambda r: abs(_macs(net, r) - target))
    net = net.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, fused=True)
    x = torch.randn(batch, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return {"mobilenet": (time.perf_counter() - start) / steps, "mobilenet_macs": _macs(net, resolution),
            "mobilenet_resolution": resolution, "supernet_macs": target}


def _macs(net, resolution: int) -> float:
    """Multiply-accumulates of one image through the convolutions and linear layers (forward)."""
    import torch

    total = 0.0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    was = net.training
    net.eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, resolution, resolution))
    net.train(was)
    for h in handles:
        h.remove()
    return total


def weighted_images_per_s(t: dict[str, float]) -> float:
    """Images per second over the preset's schedule: every phase's steps weighted by its epochs."""
    seconds = sum(t[p] * t[f"{p}_epochs"] for p in PHASES)
    return t["batch"] * sum(t[f"{p}_epochs"] for p in PHASES) / seconds


def child(args: argparse.Namespace) -> None:
    out = time_trainer(args.steps, args.warmup)
    if args.mobilenet:
        out.update(time_mobilenet(args.steps, args.warmup, int(out["batch"])))
    print(json.dumps(out))


def worktree(rev: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"factory-baseline-{rev}"
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev], check=True,
                       capture_output=True)
    return path


def run_child(code_root: Path, args: argparse.Namespace, mobilenet: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--steps", str(args.steps),
           "--warmup", str(args.warmup)] + (["--mobilenet"] if mobilenet else [])
    proc = subprocess.run(cmd, env=env, cwd=code_root, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{code_root}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    parser.add_argument("--baseline", help="git revision whose trainer is timed side by side")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mobilenet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    codes = {"this tree": ROOT}
    if args.baseline:
        codes = {f"baseline {args.baseline}": worktree(args.baseline), **codes}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in codes}
    for r in range(args.rounds):
        for i, (name, root) in enumerate(codes.items()):
            results[name].append(run_child(root, args, mobilenet=i == len(codes) - 1))
            print(f"round {r + 1}/{args.rounds} {name}: {weighted_images_per_s(results[name][-1]):.0f} img/s",
                  file=sys.stderr, flush=True)
    print(f"{int(results['this tree'][0]['threads'])} threads, median of {args.rounds} rounds; ms per optimizer "
          "step of each code's own demo preset (teacher: 1 sub-network; others: the preset's)")
    print("| code | batch | " + " | ".join(PHASES) + " | demo img/s |")
    print("|---|---|" + "---|" * (len(PHASES) + 1))
    speeds = {}
    for name, rows in results.items():
        med = {p: statistics.median(row[p] for row in rows) * 1e3 for p in PHASES}
        speeds[name] = statistics.median(weighted_images_per_s(row) for row in rows)
        print(f"| {name} | {int(rows[0]['batch'])} | " + " | ".join(f"{med[p]:.0f}" for p in PHASES)
              + f" | {speeds[name]:.0f} |")
    mb = results["this tree"]
    step = statistics.median(row["mobilenet"] for row in mb)
    print(f"| torchvision mobilenet_v3_large at {int(mb[0]['mobilenet_resolution'])} px "
          f"({mb[0]['mobilenet_macs'] / 1e6:.1f} MMAC; supernet's largest {mb[0]['supernet_macs'] / 1e6:.1f}), "
          f"one network per step | {int(mb[0]['batch'])} | {step * 1e3:.0f} | | | | {mb[0]['batch'] / step:.0f} |")
    if args.baseline:
        old = speeds[f"baseline {args.baseline}"]
        ratios = [weighted_images_per_s(n) / weighted_images_per_s(o)
                  for n, o in zip(results["this tree"], results[f"baseline {args.baseline}"], strict=True)]
        print(f"this tree / baseline: {speeds['this tree'] / old:.2f}x (per round: "
              + ", ".join(f"{r:.2f}" for r in ratios) + ")")


if __name__ == "__main__":
    main()
