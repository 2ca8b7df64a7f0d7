"""`factory train` end to end on an ImageFolder of odd images; user errors are messages with exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_data import _make_folder

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
QUICK = ["--epochs-per-phase", "1", "--steps-per-epoch", "1", "--batch-size", "4", "--device", "cpu", "--quiet"]


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory", "train", *args], capture_output=True, text=True,
                          env=ENV, timeout=600)


def test_odd_image_folder_trains_with_skip_and_names_the_bad_file(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    proc = _train("--data", str(root), "--on-bad-image", "skip", "--out", str(out), *QUICK)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "broken.png" in proc.stderr and "skipped 1" in proc.stderr
    data = json.loads((out / "data.json").read_text())
    assert data["class_names"] == ["cat", "dog"] and data["image_size"] == 32
    assert data["skipped_files"] == [str(root / "dog" / "broken.png")]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    ev = subprocess.run([sys.executable, "-m", "factory", "eval", "--run", str(out), "--arch", "min", "--json"],
                        capture_output=True, text=True, env=ENV, timeout=300)
    assert ev.returncode == 0, ev.stderr
    assert set(json.loads(ev.stdout)) >= {"accuracy", "loss", "arch"}

    again = _train("--data", str(root), "--out", str(out), *QUICK)  # refuses to overwrite a run
    assert again.returncode == 2 and "already holds a run" in again.stderr


def test_train_user_errors_exit_2_without_traceback(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    for args, fragment in (
        (["--data", str(root), "--on-bad-image", "fail"], "broken.png"),
        (["--data", str(tmp_path / "missing")], "no such folder"),
        (["--config", str(tmp_path / "none.toml")], "no such config file"),
        (["--preset", "demo", "--config", str(tmp_path / "x.toml")], "either --config or --preset"),
    ):
        proc = _train(*args, "--out", str(tmp_path / "r"), *QUICK)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert fragment in proc.stderr and "Traceback" not in proc.stderr


def test_sandwich_sampler_trains_every_phase(tmp_path):
    import math
    import tomllib

    from factory.training.config import config_from_dict
    from factory.training.trainer import train

    cfg = config_from_dict(tomllib.loads("""
[train]
batch_size = 8
steps_per_epoch = 2
subnets_per_step = 3
sampler = "sandwich"
eval_images = 16
[runtime]
device = "cpu"
progress = false
"""))
    cfg = config_from_dict({**tomllib.loads(cfg.to_toml()),
                            "phases": {p: {"epochs": 1, "lr": 0.05} for p in ("teacher", "kernel", "depth", "expand")}})
    summary = train(cfg, tmp_path / "sw")
    metrics = [json.loads(x) for x in (tmp_path / "sw" / "metrics.jsonl").read_text().splitlines()]
    assert [m["phase"] for m in metrics] == ["teacher", "kernel", "depth", "expand"]
    assert all(math.isfinite(m["loss"]) and m["loss"] > 0 for m in metrics)
    assert summary["steps"] == 8
