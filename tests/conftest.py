"""Shared fixtures. Tests keep torch to 1 thread per process: the CI box has 2 cores."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
