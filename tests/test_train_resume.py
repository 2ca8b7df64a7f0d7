"""Checkpoints: SIGKILL mid-phase then --resume completes the same schedule with the same weights;
incompatible configs and damaged checkpoints are refused with the key / file named."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_config import tiny_config

from factory.errors import UserInputError
from factory.training.checkpoint import load_checkpoint
from factory.training.config import Overrides, apply_overrides, load_config_file
from factory.training.trainer import train

CONFIG = tiny_config(batch_size=16, steps_per_epoch=6, eval_images=64, epochs={"kernel": 2}, checkpoint_interval_s=0.5)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _factory(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "factory", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "supernet.pt", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigkill_mid_phase_then_resume_completes_the_same_schedule(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    run = tmp_path / "killed"
    proc = _factory("--config", str(config), "--out", str(run))
    ckpt = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    killed_at = None
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            pos = load_checkpoint(ckpt)["position"]
            if pos.phase == 1 and pos.step > 0:  # inside the kernel phase, mid-epoch
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_at = pos
                break
        time.sleep(0.1)
    assert killed_at is not None, f"never reached mid-phase; exit {proc.poll()}: {proc.stderr.read()[-2000:]}"
    assert not (run / "summary.json").exists()  # the run did not finish
    last = load_checkpoint(ckpt)["position"]
    assert (last.phase, last.epoch) >= (killed_at.phase, killed_at.epoch)

    resumed = _factory("--out", str(run), "--resume", "--quiet", "--json")
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["steps"] == 5 * 6
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["global_epoch"] for m in metrics] == [1, 2, 3, 4, 5]  # each epoch exactly once
    assert [m["phase"] for m in metrics] == ["teacher", "kernel", "kernel", "depth", "expand"]

    # An uninterrupted run of the same config ends with the same weights: nothing was lost or redone.
    straight = tmp_path / "straight"
    train(load_config_file(config), straight)
    a, b = _weights(run), _weights(straight)
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < 1e-5, worst


def test_resume_refuses_changed_config_and_damaged_checkpoints(tmp_path):
    cfg = load_config_file(_write(tmp_path / "c.toml", CONFIG))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.toml").write_text(cfg.to_toml())
    with pytest.raises(UserInputError, match=r"train\.batch_size was 16, now 8"):
        train(apply_overrides(cfg, Overrides(batch_size=8)), run, resume=True)
    with pytest.raises(UserInputError, match="already holds a run"):
        train(cfg, run)
    ckpt = run / "checkpoints" / "last.pt"
    torch.save({"epoch": 3, "weights": torch.zeros(2)}, ckpt)
    with pytest.raises(UserInputError, match=r"last\.pt: not an ofa-factory training checkpoint"):
        train(cfg, run, resume=True)
    ckpt.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(UserInputError, match=r"last\.pt: cannot read checkpoint file"):
        train(cfg, run, resume=True)
    with pytest.raises(UserInputError, match="nothing to resume"):
        train(cfg, tmp_path / "empty", resume=True)


def test_truncated_real_checkpoint_is_named(tiny_run, tmp_path):
    data = (tiny_run / "checkpoints" / "last.pt").read_bytes()
    cut = tmp_path / "last.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match=str(cut)):
        load_checkpoint(cut)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
