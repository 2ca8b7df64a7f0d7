"""Does specialization pay? Per target, side by side at latency measured on that target's runtime:

  pick      the sub-network `factory specialize` shipped (read from DIST/report.json)
  (a)       the supernet's largest sub-network
  (b)       the best uniformly scaled sub-network (same kernel/expand/depth everywhere, any resolution)
            that meets the same budget when measured, chosen on the VALIDATION split — the hand
            scaling a user would try, chosen the way a user would choose it
  (c)       torchvision mobilenet_v3_small trained from scratch on the same training split for the
            same wall-clock time as the supernet, with the supernet's augmentation (random shifts of
            up to 2 px, label smoothing 0.1) and input size (expressed with our static modules, so it
            goes through the very same exporters and runtimes)

Accuracy: the run's TEST split, which nothing here or in the factory selected on, measured on each
contender's exported file in the target's runtime and precision, with its 95% Wilson interval;
"vs pick" is the paired-bootstrap 95% interval of (pick - contender) on the same images, and a
difference whose interval holds 0 is a tie. Validation accuracy is printed too (the pick and (b)
were chosen on it, so it is optimistic for them). Sub-networks are BN-recalibrated on the calib
split. Latency: each contender exported in the target's format/precision, timed in interleaved
rounds: p50 / p95 = median / 95th percentile of all timed runs (the tables' method, exports/timing.py).
Then the amortization figure: train-once + specialize-N vs N separate trainings of the picks
(extrapolated from one measured epoch of each pick trained alone, for as many epochs as the supernet).

    .venv/bin/python bench/specialization_gain.py --run runs/demo --dist dist
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from exports.convert import convert
from exports.intervals import AccuracyEstimate, paired_difference
from exports.runtime import load_session
from factory.data import to_model_input
from factory.evaluate import calibrated_subnet, evaluate_arch
from factory.run import SUMMARY_FILE, load_run
from factory.training.trainer import random_shift
from supernets import ArchConfig
from supernets.torchvision_compat import from_torchvision_mobilenet_v3
from targets.latency import load_latency_model
from targets.measure import measure_files_rounds
from targets.profile import builtin_profiles, get_profile


def file_size_mb(main: Path) -> float:
    if main.suffix == ".xml":
        return (main.stat().st_size + main.with_suffix(".bin").stat().st_size) / 1e6
    return main.stat().st_size / 1e6


def export_for(model: torch.nn.Module, profile, resolution: int, calib: np.ndarray, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    return convert(model.eval(), profile.format, profile.precision, where, resolution=resolution,
                   calibration=calib if profile.precision == "int8" else None)


def measure_interleaved(files: dict[str, tuple[Path, int]], threads: int, rounds: int, repeats: int) -> dict:
    """(p50, p95) per contender, timed interleaved with the tables' own method and code
    (targets.measure.measure_files_rounds: contended rounds of a multi-thread target set aside)."""
    keys = list(files)
    timed = measure_files_rounds([files[k][0] for k in keys], threads, rounds=rounds, repeats=repeats)
    if timed.contended_rounds:
        print(f"  ({timed.contended_rounds} of {timed.rounds} rounds contended, set aside)")
    return dict(zip(keys, timed.timings, strict=True))


def train_mbv3_small(run, seconds: float, resolution: int, seed: int = 0,
                     clock=time.perf_counter) -> tuple[torch.nn.Module, float, int]:
    """torchvision mobilenet_v3_small from scratch for `seconds` of wall time (AdamW + cosine), with the
    supernet's augmentation (random shifts up to 2 px, label smoothing 0.1). Returns its val accuracy."""
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(seed)
    ds = run.dataset()
    y_all = ds.train.labels
    model = mobilenet_v3_small(num_classes=run.num_classes).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    batch, step, start = 64, 0, clock()
    est_steps = None
    while True:
        elapsed = clock() - start
        if elapsed >= seconds:
            break
        if step == 20:
            est_steps = int(seconds / (elapsed / 20))
        if est_steps:
            for g in opt.param_groups:
                g["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / est_steps)))
        idx = torch.randint(0, len(y_all), (batch,), generator=gen)
        images = random_shift(ds.train.images[idx], 2, torch.Generator().manual_seed(seed * 1_000_003 + step))
        x = to_model_input(images, resolution, run.mean, run.std).contiguous(memory_format=torch.channels_last)
        loss = torch.nn.functional.cross_entropy(model(x), y_all[idx], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    model.eval()
    xv = to_model_input(ds.val.images, resolution, run.mean, run.std)
    with torch.no_grad():
        acc = float((model(xv).argmax(1) == ds.val.labels).float().mean())
    return model, acc, step


def test_hits(main_file: Path, threads: int, run, resolution: int) -> np.ndarray:
    """Per-image hits (bool) of an exported file, run in its own runtime, on the run's test split."""
    ds = run.dataset()
    x = to_model_input(ds.test.images, resolution, run.mean, run.std).numpy()
    logits = load_session(main_file, threads=threads).run(x)
    return logits.argmax(1) == ds.test.labels.numpy()


def epoch_seconds_alone(run, arch: ArchConfig, steps: int = 15, batch: int = 64) -> float:
    """One epoch of training `arch` alone, extrapolated from `steps` measured steps."""
    net = run.supernet.extract(arch).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, arch.resolution, arch.resolution).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, run.num_classes, (batch,))
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * math.ceil(len(run.dataset().train) / batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--dist", default="dist")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--mbv3-seconds", type=float, default=None,
                    help="Training time of the from-scratch baseline (default: the supernet's, on --clock).")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: the supernet's wall-clock training time; cpu: its process CPU time (fair when the "
                         "machine's load differs between the two trainings)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    run = load_run(args.run)
    ds = run.dataset()
    if len(ds.test) == 0:
        raise SystemExit(f"{run.path}: this run has no test split (made before the factory held one out); "
                         "train it again to report held-out accuracy")
    report = {o["target"]: o for o in json.loads((Path(args.dist) / "report.json").read_text())}
    summary = json.loads((run.path / SUMMARY_FILE).read_text())
    train_seconds = float(summary["train_seconds"])
    space = run.space
    acc_cache: dict[ArchConfig, float] = {}

    def accuracy(arch: ArchConfig) -> float:
        key = space.canonical(arch)
        if key not in acc_cache:
            acc_cache[key] = evaluate_arch(run, arch).accuracy
        return acc_cache[key]

    uniform = space.uniform_grid()
    print(f"evaluating {len(uniform)} uniform sub-networks (BN recalibrated)...", flush=True)
    for a in uniform:
        accuracy(a)
    base_res = 28 if 28 in space.resolutions else max(space.resolutions)
    mbv3_seconds = args.mbv3_seconds or (train_seconds if args.clock == "wall" else float(summary["cpu_seconds"]))
    print(f"training torchvision mobilenet_v3_small from scratch for {mbv3_seconds:.0f} s ({args.clock}) "
          f"at {base_res} px...",
          flush=True)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    mbv3, mbv3_acc, mbv3_steps = train_mbv3_small(run, mbv3_seconds, base_res, clock=clock)
    mbv3_static = from_torchvision_mobilenet_v3(mbv3, base_res)
    print(f"  {mbv3_steps} steps, validation accuracy {100 * mbv3_acc:.2f}% (its test accuracy: table below)")

    profiles = [get_profile(n) for n in report if n in builtin_profiles()]
    rows_out = []
    picks = {}
    for profile in profiles:
        o = report[profile.name]
        if o["status"] != "shipped":
            print(f"\n## {profile.name}: not shipped ({o['status']}): {o['message']}")
            continue
        pick = ArchConfig.from_dict(o["arch"])
        picks[profile.name] = pick
        budgets = {k: v for k, v in profile.constraints.to_dict().items() if v is not None}
        lat = load_latency_model(run.path, profile, space=space, num_classes=run.num_classes)

        def predicted_ok(a: ArchConfig, lat=lat, budgets=budgets) -> bool:
            return (lat.predict(a) <= budgets.get("latency_p50_ms", math.inf)
                    and lat.predict_p95(a) <= budgets.get("latency_p95_ms", math.inf)
                    and lat.size_mb(a) <= budgets.get("size_mb", math.inf)
                    and lat.peak_memory_mb(a) <= budgets.get("peak_memory_mb", math.inf))

        uni_sorted = sorted((a for a in uniform if predicted_ok(a)), key=accuracy, reverse=True)[:4]
        contenders: dict[str, tuple[torch.nn.Module, ArchConfig | None, float]] = {
            "pick": (calibrated_subnet(run, pick), pick, accuracy(pick)),
            "(a) largest": (calibrated_subnet(run, space.largest()), space.largest(), accuracy(space.largest())),
        }
        for i, a in enumerate(uni_sorted):
            contenders[f"(b) uniform #{i + 1}"] = (calibrated_subnet(run, a), a, accuracy(a))
        contenders["(c) mbv3-small scratch"] = (mbv3_static, None, mbv3_acc)
        with tempfile.TemporaryDirectory() as tmp:
            files, sizes, hits = {}, {}, {}
            for name, (model, arch, _acc) in contenders.items():
                res = arch.resolution if arch else base_res
                calib = to_model_input(ds.calib.images, res, run.mean, run.std).numpy()
                main_file = export_for(model, profile, res, calib, Path(tmp) / name.replace(" ", "_"))
                files[name] = (main_file, res)
                sizes[name] = file_size_mb(main_file)
                hits[name] = test_hits(main_file, profile.threads, run, res)
            lat_measured = measure_interleaved(files, profile.threads, args.rounds, args.repeats)
        print(f"\n## {profile.name} ({profile.runtime} {profile.precision}, {profile.threads} thread(s)); "
              f"budgets {budgets}; test split {len(ds.test)} images")
        print(f"{'contender':<24} {'test acc [95% CI]':>24} {'pick - it [95% CI]':>26} {'verdict':>8} {'val acc':>8} "
              f"{'p50 ms':>8} {'p95 ms':>8} {'size MB':>8}  meets budget  arch")
        best_uniform = None
        results = {}
        for name, (_m, _arch, acc) in contenders.items():
            p50, p95 = lat_measured[name]
            ok = (p50 <= budgets.get("latency_p50_ms", math.inf) and p95 <= budgets.get("latency_p95_ms", math.inf)
                  and sizes[name] <= budgets.get("size_mb", math.inf))
            results[name] = (acc, p50, p95, sizes[name], ok)
            if name.startswith("(b)") and ok and (best_uniform is None or acc > results[best_uniform][0]):
                best_uniform = name  # chosen on validation accuracy, as a user would
        for name, (_m, arch, _acc) in contenders.items():
            acc, p50, p95, size, ok = results[name]
            label = "torchvision mobilenet_v3_small" if arch is None else (
                f"r{arch.resolution} d{list(arch.depths)}" if not name.startswith("(b)") else
                f"r{arch.resolution} d{arch.depths[0]} k{arch.kernel_sizes[0]} e{arch.expand_ratios[0]}")
            test = AccuracyEstimate.of(hits[name])
            low, high = test.interval
            diff = None if name == "pick" else paired_difference(hits["pick"], hits[name])
            diff_text = "" if diff is None else (f"{100 * diff.difference:+.2f} [{100 * diff.low:+.2f}, "
                                                 f"{100 * diff.high:+.2f}]")
            verdict = "" if diff is None else {"a better": "pick", "b better": "it", "tie": "tie"}[diff.verdict]
            chosen = " <- best (b) on val" if name == best_uniform else ""
            print(f"{name:<24} {f'{100 * test.value:.2f}% [{100 * low:.1f}, {100 * high:.1f}]':>24} {diff_text:>26} "
                  f"{verdict:>8} {100 * acc:>7.2f}% {p50:>8.3f} {p95:>8.3f} {size:>8.3f}  "
                  f"{'yes' if ok else 'NO':<12}  {label}{chosen}")
        pick_ok = results["pick"][4]
        verdicts = [f"pick meets budget: {'yes' if pick_ok else 'NO'}"]
        for other in ("(a) largest", best_uniform, "(c) mbv3-small scratch"):
            if other is None:
                verdicts.append("no uniform sub-network meets the budget")
                continue
            d = paired_difference(hits["pick"], hits[other])
            word = {"a better": "pick better than", "b better": "pick WORSE than", "tie": "pick ties"}[d.verdict]
            budget_note = "" if results[other][4] else " (which misses the budget)"
            verdicts.append(f"{word} {other}{budget_note}: {100 * d.difference:+.2f} points "
                            f"[{100 * d.low:+.2f}, {100 * d.high:+.2f}] on test")
        print("; ".join(verdicts))
        rows_out.append({"target": profile.name, "results": results, "best_uniform": best_uniform})

    if picks:
        spec_seconds = sum(report[n].get("seconds", 0.0) for n in picks)
        epochs = int(summary.get("epochs") or sum(summary.get("phases", {}).values()))
        print(f"\n## amortization (N = {len(picks)} targets)")
        print(f"train once: {train_seconds:.0f} s (measured) + specialize {len(picks)} targets: {spec_seconds:.0f} s "
              f"(measured) = {train_seconds + spec_seconds:.0f} s")
        alone = {}
        for name, arch in picks.items():
            alone[name] = epoch_seconds_alone(run, arch) * epochs
            print(f"  {name}: training its pick alone for {epochs} epochs ≈ {alone[name]:.0f} s "
                  f"(extrapolated from measured steps)")
        per_target_alone = statistics.mean(alone.values())
        per_target_spec = spec_seconds / len(picks)
        print(f"N separate trainings: {sum(alone.values()):.0f} s (extrapolated); "
              f"per extra target: {per_target_spec:.0f} s specialize vs {per_target_alone:.0f} s training")
        if per_target_alone > per_target_spec:
            n_even = train_seconds / (per_target_alone - per_target_spec)
            print(f"break-even: train-once wins from N ≈ {math.ceil(n_even)} targets on")


if __name__ == "__main__":
    main()
