"""Shared fixtures. Tests keep torch to 1 thread per process: the CI box has 2 cores."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from tiny_config import tiny_config

# A few steps per phase at tiny settings: every run file exists and every phase ran, in seconds; 10 steps
# (not 6) so that the largest sub-network clears chance by a margin (tests/test_tiny_run_learns.py).
TINY_CONFIG = tiny_config(batch_size=32, steps_per_epoch=10, eval_images=200)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """Path of a run trained on mnist5k for a few steps per phase (config.toml, data.json, supernet.pt,
    checkpoints/last.pt, metrics.jsonl, summary.json). Session-scoped: treat it as read-only."""
    import tomllib

    import torch

    from factory.training.config import config_from_dict
    from factory.training.trainer import train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(config_from_dict(tomllib.loads(TINY_CONFIG), origin="tiny_run"), out)
    return out
