"""Run exported files on the inputs of an .npz and save their outputs: started under an emulated CPU.

`python avx2_runner.py IO.npz FILE...` reads `inputs`, writes `out_<i>` for the i-th file back into
IO.npz's sibling `outputs.npz`. It imports no torch (only the runtimes), so it starts quickly under qemu.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from exports.runtime import load_session


def main(io_path: str, *files: str) -> None:
    with np.load(io_path) as data:
        inputs = data["inputs"]
    outputs = {f"out_{i}": load_session(Path(f), threads=1).run(inputs) for i, f in enumerate(files)}
    np.savez(Path(io_path).with_name("outputs.npz"), **outputs)


if __name__ == "__main__":
    main(*sys.argv[1:])
