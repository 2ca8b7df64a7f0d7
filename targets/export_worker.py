"""Worker process of `targets.probe.export_models`: convert a list of probe models, one line per file.

    python -m targets.export_worker JOB.pt

JOB.pt is a torch-saved list of (model, format, precision, out_dir, resolution, calibration) written
by the parent (our own temp file, hence weights_only=False). Prints each exported file's path as it
finishes; any error ends the process non-zero with the message on stderr.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import torch

    from targets.probe import _convert_one

    torch.set_num_threads(1)
    for item in torch.load(argv[0], weights_only=False):
        print(_convert_one(item), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
