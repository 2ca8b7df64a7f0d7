"""`factory predictor fit` under torchrun with 2 CPU processes (gloo) measures what one process measures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from factory.predictor.samples import SAMPLES_FILE

# 600 validation images = 3 batches of 250 (the last one partial): rank 0 evaluates two, rank 1 one
FIT = ["predictor", "fit", "--samples", "20", "--holdout", "5", "--no-uniform", "--val-images", "600",
       "--device", "cpu", "--json"]


def _fresh_copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns(SAMPLES_FILE, "predictor.pt"))
    return dest


def _samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / SAMPLES_FILE).read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_predictor_measurements_equal_one_process(tiny_run: Path, tmp_path: Path) -> None:
    one, two = _fresh_copy(tiny_run, tmp_path / "one"), _fresh_copy(tiny_run, tmp_path / "two")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "factory", *FIT, "--run", str(one)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr[-3000:]
    # "--": torchrun's own parser would take --run for an abbreviation of its --run-path (pytorch#120601)
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "-m", "factory", "--", *FIT, "--run", str(two)],
                           capture_output=True, text=True, timeout=300, env=env)
    assert multi.returncode == 0, multi.stderr[-3000:]

    # one sample line per sub-network, in the same order, written once (by rank 0)
    a, b = _samples(one), _samples(two)
    assert len(a) == len(b) == 20
    assert [s["arch"] for s in b] == [s["arch"] for s in a]
    assert len({json.dumps(s["arch"], sort_keys=True) for s in b}) == 20
    assert len({s["accuracy"] for s in a}) > 1  # the sub-networks differ, so the comparison means something
    for x, y in zip(a, b, strict=True):
        assert y["images"] == x["images"] == 600
        assert y["accuracy"] == x["accuracy"]
        assert y["loss"] == pytest.approx(x["loss"], abs=1e-6)
    # only rank 0 printed its report; the predictor it fitted is the single process's
    single_report, multi_report = json.loads(single.stdout), json.loads(multi.stdout)
    assert multi_report["holdout_spearman"] == single_report["holdout_spearman"]
    assert multi_report["accuracy_range"] == single_report["accuracy_range"]
    assert (two / "predictor.pt").is_file()
