"""torchrun with 2 CPU processes (gloo): both ranks must end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_config import tiny_config

CONFIG = tiny_config(batch_size=16, steps_per_epoch=3, eval_images=50, epochs={"depth": 0})


@pytest.mark.slow
def test_torchrun_two_processes_end_with_identical_weights(tmp_path):
    config = tmp_path / "ddp.toml"
    config.write_text(CONFIG)
    hashes = tmp_path / "hashes"
    hashes.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(Path(__file__).with_name("ddp_probe.py")), str(config), str(tmp_path / "run"), str(hashes)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = (hashes / "rank0.txt").read_text().split()
    rank1 = (hashes / "rank1.txt").read_text().split()
    assert rank0[1] == rank1[1] == "2"
    assert rank0[0] == rank1[0]
    # only rank 0 wrote the run; the weights it saved are the ones both ranks hold
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["weights_sha256"] == rank0[0]
    assert summary["steps"] == 9
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["phase"] for x in lines] == ["teacher", "kernel", "expand"]
