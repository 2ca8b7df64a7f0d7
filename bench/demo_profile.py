"""Where `factory demo` spends its time: wall seconds per stage, then the training step's images/s next to a
plain torchvision MobileNetV3 of similar MACs at the same batch, on the same host, in one run.

    .venv/bin/python bench/demo_profile.py                    # a fresh demo in a temp folder, then throughput
    .venv/bin/python bench/demo_profile.py --dist dist        # the stage table of a finished demo (timings.json)
    .venv/bin/python bench/demo_profile.py --baseline REV     # also time REV's trainer side by side

The stage table is the one `factory demo` prints at its end (factory.ship.stages); `make demo`'s install
step is outside it (time it with `time make install` on a fresh clone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput  # the bench folder is not a package: imported by path

ROOT = Path(__file__).resolve().parents[1]


def cpu_description() -> str:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, {os.cpu_count()} cores, {isa}" + (" (+bf16)" if "avx512_bf16" in flags else "")


def run_demo(folder: Path) -> Path:
    """`factory demo` of this tree into `folder` (fresh run folder), its output streamed; returns --out."""
    dist, run = folder / "dist", folder / "runs" / "demo"
    cmd = [sys.executable, "-m", "factory", "demo", "--out", str(dist), "--run", str(run)]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    print(f"factory demo: {time.perf_counter() - start:.0f} s wall", file=sys.stderr)
    return dist


def stage_table(dist: Path) -> str:
    record = json.loads((dist / "timings.json").read_text())
    lines = ["| stage | seconds | |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {s['seconds']:.1f} | {s.get('note', '')} |" for s in record["stages"]]
    lines.append(f"| **total (after install)** | **{record['total_seconds']:.1f}** | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dist", type=Path, help="a finished demo's --out folder (default: run a fresh demo)")
    parser.add_argument("--keep", type=Path, help="run the fresh demo in this folder instead of a temp one")
    parser.add_argument("--baseline", help="git revision whose trainer is timed next to this tree's")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"host: {cpu_description()}")
    if args.dist is None:
        folder = args.keep or Path(tempfile.mkdtemp(prefix="demo-profile-"))
        args.dist = run_demo(folder)
    print(stage_table(args.dist))
    print()
    sys.argv = [sys.argv[0], "--steps", str(args.steps), "--rounds", str(args.rounds)]
    if args.baseline:
        sys.argv += ["--baseline", args.baseline]
    train_throughput.main()


if __name__ == "__main__":
    main()
