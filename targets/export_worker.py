"""Worker process of `targets.probe.export_models`: convert a share of the probe models, one line per file.

    python -m targets.export_worker JOB.pt

JOB.pt is a torch-saved `targets.probe.ProbeJob` written by the parent (our own temp file, hence
weights_only=False). Prints each exported file's path as it finishes; any error ends the process non-zero
with the message on stderr.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import torch

    from targets.probe import convert_probes

    convert_probes(torch.load(argv[0], weights_only=False), lambda path: print(path, flush=True))
    return 0


if __name__ == "__main__":
    from exports.gc_policy import exit_now, freeze_import_survivors

    freeze_import_survivors()
    exit_now(main(sys.argv[1:]))
