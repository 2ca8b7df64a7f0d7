"""A first install on a slow disk, emulated: a fresh venv, the page cache dropped, and `tools/install.py` of
a given tree run in a cgroup (v1 blkio) whose reads of the disk holding the wheel cache are held to MB_PER_S,
as this host's disk reads at its slow hours (3.9 GB of wheels in ~100 s). The kernel queues the throttled
reads in order, so a pip process's small reads (its imports) wait behind whatever the wheel checks have
queued, as on the slow disk itself; an earlier version of this bench slept in the checks instead and did not
show that. Needs root. Compare trees side by side, alternating:

    python bench/install_cold_disk.py [--mb-per-s 40] [--tree OTHER_CHECKOUT] [--tree ...] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CGROUP = Path("/sys/fs/cgroup/blkio/factory-bench-slow-disk")


def device_of(path: Path) -> str:
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def whole_disk(dev: str) -> str:
    """The disk of a partition ("254:1" -> "254:0"): blkio throttles whole devices."""
    link = Path(f"/sys/dev/block/{dev}")
    if (link / "partition").exists():
        return (link.resolve().parent / "dev").read_text().strip()
    return dev


def timed_install(tree: Path, mb_per_s: float) -> float:
    with tempfile.TemporaryDirectory(prefix="install-bench-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ofa-factory"
        shutil.rmtree(cache / "site", ignore_errors=True)  # a first install on this machine
        CGROUP.mkdir(exist_ok=True)
        disk = whole_disk(device_of(cache / "wheels" if (cache / "wheels").exists() else cache))
        (CGROUP / "blkio.throttle.read_bps_device").write_text(f"{disk} {int(mb_per_s * 1e6)}")
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3")
        start = time.monotonic()
        command = (f"echo $$ > {CGROUP}/tasks && exec {venv}/bin/python tools/install.py {venv}/bin/python "
                   f"'.[dev]'")
        proc = subprocess.run(["bash", "-c", command], cwd=tree, capture_output=True, text=True)
        seconds = time.monotonic() - start
        if proc.returncode != 0:
            sys.exit(f"{tree}: install failed\n{proc.stdout}\n{proc.stderr}")
        return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb-per-s", type=float, default=40.0)
    parser.add_argument("--tree", type=Path, action="append",
                        help="a checkout whose tools/install.py to time (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if os.geteuid() != 0 or not CGROUP.parent.is_dir():
        sys.exit("needs root and the cgroup v1 blkio controller (/sys/fs/cgroup/blkio)")
    trees = args.tree or [ROOT]
    for r in range(args.rounds):
        for tree in trees:
            print(f"round {r + 1}: {tree}: {timed_install(tree, args.mb_per_s):.0f} s "
                  f"(reads held to {args.mb_per_s:g} MB/s, page cache dropped)", flush=True)


if __name__ == "__main__":
    main()
