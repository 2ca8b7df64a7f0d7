"""`python -m factory.predictor.measure_helper JOB`: the helper process of `two_process.measure_in_two`.

A module of its own so the garbage-collector policy (exports.gc_policy) is in place before torch is imported.
"""

from __future__ import annotations

import sys

from exports.gc_policy import exit_now, freeze_import_survivors

if __name__ == "__main__":
    freeze_import_survivors()
    from factory.predictor.two_process import helper_main

    exit_now(helper_main(sys.argv[1]))
