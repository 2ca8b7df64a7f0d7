"""Export latency: p50 per format x precision of ONE sub-network, side by side, plus export time.

Goals (issue 5): int8 TFLite and int8 OpenVINO >= 1.5x faster than their fp32 file; export of one
sub-network to all three formats <= 90 s on 2 cores. Sessions are timed with the one method of
exports/timing.py (interleaved shuffled rounds, p50 = median of all timed runs).

    .venv/bin/python bench/export_latency.py --run runs/demo --arch max [--threads 1] [--rounds 7]
    .venv/bin/python bench/export_latency.py            # no run: an untrained supernet, random BN stats
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from exports import FORMATS, PRECISIONS
from exports.convert import convert
from exports.runtime import load_session
from exports.timing import KERNEL_PREFERENCE, time_interleaved


def model_and_data(run_dir: str | None, arch_spec: str) -> tuple[torch.nn.Module, int, np.ndarray, str]:
    """The sub-network (BN recalibrated when a run is given), its resolution, calibration images."""
    if run_dir:
        from factory.data import to_model_input
        from factory.evaluate import calibrated_subnet
        from factory.run import load_run
        from factory.search.files import arch_from_option

        run = load_run(run_dir)
        arch = arch_from_option(run.space, arch_spec)
        calib = to_model_input(run.dataset().calib.images[:200], arch.resolution, run.mean, run.std).numpy()
        return calibrated_subnet(run, arch), arch.resolution, calib, f"{run.path} arch={arch_spec}"
    from supernets import Supernet, get_space

    space = get_space()
    gen = torch.Generator().manual_seed(0)
    net = Supernet(space, num_classes=10).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d) or hasattr(m, "running_var"):
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.running_mean.uniform_(-0.1, 0.1, generator=gen)
    arch = space.largest() if arch_spec == "max" else space.smallest()
    calib = torch.randn(200, 3, arch.resolution, arch.resolution, generator=gen).numpy()
    return net.extract(arch).eval(), arch.resolution, calib, f"untrained supernet arch={arch_spec}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="trained run folder (default: untrained supernet)")
    parser.add_argument("--arch", default="max", help="max | min | arch JSON (with --run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=100, help="timed runs per session per round")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, resolution, calib, what = model_and_data(args.run, args.arch)
    print(f"sub-network: {what}, resolution {resolution}, threads {args.threads}, "
          f"{args.rounds} rounds x {args.repeats} runs, p50 = median of all runs (exports.timing)")
    with tempfile.TemporaryDirectory() as tmp:
        files: dict[tuple[str, str], Path] = {}
        seconds: dict[tuple[str, str], float] = {}
        for prec in PRECISIONS:
            for fmt in FORMATS:
                start = time.perf_counter()
                files[(fmt, prec)] = convert(model, fmt, prec, Path(tmp) / f"{fmt}_{prec}", resolution=resolution,
                                             calibration=calib)
                seconds[(fmt, prec)] = time.perf_counter() - start
        fp32_total = sum(seconds[(fmt, "fp32")] for fmt in FORMATS)
        package_seconds = None
        if args.run:  # the whole `factory export` step: BN recalibration, 3 conversions, the verification gate
            from factory.ship.export import export_package

            start = time.perf_counter()
            export_package(args.run, args.arch, list(FORMATS), "fp32", Path(tmp) / "pkg", latency_repeats=50)
            package_seconds = time.perf_counter() - start
        print("\nconversion time (s; the first TFLite conversion includes importing TensorFlow):")
        for prec in PRECISIONS:
            print(f"  {prec}: " + "  ".join(f"{fmt} {seconds[(fmt, prec)]:.1f}" for fmt in FORMATS))
        print(f"  one sub-network to all three formats, fp32 conversions only: {fp32_total:.1f} s (goal <= 90 s; "
              "includes importing TensorFlow and OpenVINO)")
        if package_seconds is not None:
            print(f"  export_package (== `factory export`, fp32, 3 formats, incl. BN recalibration + verification "
                  f"gate on the validation split): {package_seconds:.1f} s (goal <= 90 s)")

        sessions = {}
        for (fmt, prec), path in files.items():
            if fmt == "tflite":  # LiteRT both ways: a package ships the faster (exports.timing.choose_tflite_kernels)
                for kernels in ("xnnpack", "builtin"):
                    sessions[(fmt, prec, kernels)] = load_session(path, args.threads, tflite_kernels=kernels)
            elif fmt == "openvino":  # f32 pinned vs OpenVINO's own choice (bf16 where the CPU has it)
                for hint in ("f32", "default"):
                    sessions[(fmt, prec, hint)] = load_session(path, args.threads, openvino_hint=hint)
            else:
                sessions[(fmt, prec, "")] = load_session(path, args.threads)
        x = np.ascontiguousarray(calib[:1], dtype=np.float32)
        keys = list(sessions)
        timed = time_interleaved([lambda s=sessions[k]: s.run_one(x) for k in keys], warmup=10,
                                 repeats=args.repeats, rounds=args.rounds)
        p50 = {key: t[0] for key, t in zip(keys, timed.timings, strict=True)}
    for prec in PRECISIONS:  # what a package ships ("auto"): builtin TFLite kernels only when >5% faster
        xnn, builtin = p50[("tflite", prec, "xnnpack")], p50[("tflite", prec, "builtin")]
        p50[("tflite", prec, "auto")] = builtin if builtin < (1 - KERNEL_PREFERENCE) * xnn else xnn
        p50[("openvino", prec, "auto")] = p50[("openvino", prec, "default" if prec == "int8" else "f32")]

    print("\np50 latency, ms (batch 1):")
    print(f"  {'format':<22}" + "".join(f"{p:>10}" for p in PRECISIONS) + "   fp32/fp16   fp32/int8")
    rows = [("onnx", ""), ("tflite", "auto"), ("tflite", "xnnpack"), ("tflite", "builtin"), ("openvino", "auto"),
            ("openvino", "f32"), ("openvino", "default")]
    for fmt, kernels in rows:
        label = f"{fmt} ({kernels})" if kernels else fmt
        row = [p50[(fmt, p, kernels)] for p in PRECISIONS]
        ratios = f"{row[0] / row[1]:>11.2f}x{row[0] / row[2]:>11.2f}x"
        print(f"  {label:<22}" + "".join(f"{v:>10.3f}" for v in row) + ratios)
    print("\n  tflite (auto) = what a package ships: the default XNNPACK delegate unless LiteRT's builtin kernels "
          "are more than 5% faster for that file (exports.timing.choose_tflite_kernels)")
    print("  openvino (auto) = f32 pinned for float IRs (fp32 parity), OpenVINO's default for int8 IRs (bf16 for "
          "the unquantized ops on CPUs that have it); openvino (default) runs even fp32 IRs in bf16 there")
    for fmt, kernels in (("tflite", "auto"), ("tflite", "builtin"), ("openvino", "auto"), ("openvino", "f32"),
                         ("openvino", "default")):
        ratio = p50[(fmt, "fp32", kernels)] / p50[(fmt, "int8", kernels)]
        label = f"{fmt} ({kernels})" if kernels else fmt
        print(f"  goal int8 {label} >= 1.5x faster than fp32: {ratio:.2f}x -> {'met' if ratio >= 1.5 else 'NOT met'}")
    print("  (machine shared with other jobs: figures are upper bounds)")


if __name__ == "__main__":
    main()
