"""The 224-px path end to end, timed per step: a random-init OFA MobileNetV3 checkpoint of MIT's reference
code (the `ofa` package) -> `factory import ofa` -> `factory specialize --targets all` on a 200-image
ImageFolder (20 MNIST digits per class, upscaled to 224 px RGB, folders named after labels 0-9).

    .venv/bin/python bench/ofa_224_path.py --width 1.0 --work /tmp/ofa224 [--predictor-samples N]

Prints the wall time of each step (import, predictor, each target's table / search / packaging) and the
shipped packages. Pretrained weights cannot be downloaded here, so accuracies are those of an untrained
network (chance: 1 in 1000 classes); the figures that matter are the times and the verification gates.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTORY = [sys.executable, "-m", "factory"]


def make_checkpoint(width: float, path: Path, seed: int = 0) -> Path:
    import torch
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    torch.manual_seed(seed)
    net = OFAMobileNetV3(n_classes=1000, width_mult=width, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                         depth_list=[2, 3, 4])
    torch.save({"state_dict": net.state_dict()}, path)  # as OFA's model zoo publishes it
    return path


def make_image_folder(root: Path, per_class: int = 20, size: int = 224) -> Path:
    from PIL import Image

    from factory.data import load_dataset

    ds = load_dataset("mnist5k", seed=0)
    for digit in range(10):
        folder = root / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for i in (ds.val.labels == digit).nonzero().flatten()[:per_class].tolist():
            Image.fromarray(ds.val.images[i].numpy().transpose(1, 2, 0)).resize((size, size)).save(folder / f"{i}.png")
    return root


def timed(cmd: list[str], log: Path) -> tuple[float, int]:
    start = time.perf_counter()
    with log.open("w") as fh:
        code = subprocess.call(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    return time.perf_counter() - start, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", choices=["1.0", "1.2"], default="1.0")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ofa224"))
    parser.add_argument("--predictor-samples", type=int, default=None)
    args = parser.parse_args()
    work = args.work / f"w{args.width}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ckpt = make_checkpoint(float(args.width), work / f"ofa_mbv3_d234_e346_k357_w{args.width}.pth")
    images = make_image_folder(work / "images")
    run, dist = work / "run", work / "dist"
    rows = []
    seconds, code = timed([*FACTORY, "import", "ofa", str(ckpt), "--width", args.width, "--out", str(run),
                           "--data", str(images)], work / "import.log")
    rows.append(("factory import ofa", seconds, code))
    extra = ["--predictor-samples", str(args.predictor_samples)] if args.predictor_samples else []
    log = work / "specialize.log"
    seconds, code = timed([*FACTORY, "--log-file", str(log), "specialize", "--run", str(run), "--targets", "all",
                           "--out", str(dist), *extra], work / "specialize.out")
    rows.append(("factory specialize --targets all", seconds, code))
    text = log.read_text()
    print(f"width {args.width}: {ckpt.name}, {sum(1 for _ in images.rglob('*.png'))} images")
    for name, secs, rc in rows:
        print(f"  {name:<36} {secs:7.1f} s  exit {rc}")
    predictor = re.search(r"predictor: .*measured in (\d+) s", text)
    if predictor:
        print(f"    predictor measurements                {predictor.group(1):>5} s  ({predictor.group(0)[:90]})")
    for m in re.finditer(r"\[\d+/\d+\] (\S+): (shipped|failed|infeasible)[^(]*\((\d+) s\)", text):
        print(f"    target {m.group(1):<30} {m.group(3):>5} s  {m.group(2)}")
    for table in sorted((run / "latency").glob("*.json")):
        t = json.loads(table.read_text())
        cv = t["fit"]["p50_cv5"]
        print(f"    table {table.stem:<31} {t['method']['wall_seconds']:5.0f} s  p50 range "
              f"{t['fit']['measured_p50_range_ms'][0]:.2f}-{t['fit']['measured_p50_range_ms'][1]:.2f} ms, "
              f"5-fold CV within 10% {cv['within_10pct']:.0%}, Spearman {cv['spearman']:.3f}")
    for manifest in sorted(dist.glob("*/*/manifest.json")):
        m = json.loads(manifest.read_text())
        f = m["files"][0]
        fig = m["metrics"]["files"][f["path"]]  # size_bytes: every file of the format (.xml + .bin)
        p50, parity = fig.get("latency_p50_ms", float("nan")), fig.get("relative_diff", float("nan"))
        print(f"    shipped {manifest.parent.relative_to(dist)}: r{m['arch']['resolution']}, "
              f"{m['metrics']['macs'] / 1e6:.0f} MMACs, {f['format']} {f['precision']}, "
              f"{fig['size_bytes'] / 1e6:.1f} MB, p50 {p50:.2f} ms, parity {parity:.1e}")


if __name__ == "__main__":
    main()
