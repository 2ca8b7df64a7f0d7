"""A first install's wheel step on a slow disk, simulated: reading a wheel for its sha256 check is held to
MB_PER_S in total (one token bucket over the four reading threads), as a cold page cache on this host read
at its slow hours (3.9 GB in ~100 s), while pip's own reads and work are real. Times the step of a given
`tools/install.py` into a fresh venv, so two versions can be compared side by side:

    python bench/install_cold_disk.py [--mb-per-s 40] [--install-py OTHER/tools/install.py]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb-per-s", type=float, default=40.0)
    parser.add_argument("--install-py", type=Path, default=ROOT / "tools" / "install.py")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("install_under_test", args.install_py)
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    install.ROOT = ROOT
    lock = threading.Lock()
    budget = {"t": time.monotonic()}
    real_sha = install.sha256_of

    def slow_sha(path: Path) -> str:
        with lock:  # the disk reads one wheel's bytes after another
            start = max(budget["t"], time.monotonic())
            budget["t"] = start + path.stat().st_size / (args.mb_per_s * 1e6)
        time.sleep(max(0.0, budget["t"] - time.monotonic()))
        return real_sha(path)

    install.sha256_of = slow_sha
    wheels = json.loads((ROOT / "tools" / "install-lock.json").read_text())["wheels"]
    with tempfile.TemporaryDirectory(prefix="install-bench-") as tmp:
        xdg = Path(tmp) / "xdg" / "ofa-factory"
        xdg.mkdir(parents=True)
        real_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ofa-factory" / "wheels"
        (xdg / "wheels").symlink_to(real_cache)
        os.environ["XDG_CACHE_HOME"] = str(xdg.parent)
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        start = time.monotonic()
        install._pip_install_wheels(str(venv / "bin" / "python"), wheels, 2)
        print(f"{args.install_py}: {len(wheels)} wheels installed in {time.monotonic() - start:.1f} s "
              f"(checking reads at {args.mb_per_s:g} MB/s)")
        shutil.rmtree(venv)


if __name__ == "__main__":
    main()
