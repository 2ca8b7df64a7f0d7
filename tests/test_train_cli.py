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


def test_eval_every_phase_evaluates_after_each_phase_and_never_the_untrained_smallest(tmp_path):
    import tomllib

    from factory.training.config import config_from_dict
    from factory.training.trainer import train

    text = """
[train]
batch_size = 8
steps_per_epoch = 1
subnets_per_step = 2
sampler = "sandwich"
eval_images = 16
eval_every = "phase"
[runtime]
device = "cpu"
progress = false
"""
    cfg = config_from_dict({**tomllib.loads(text),
                            "phases": {p: {"epochs": 2, "lr": 0.05} for p in ("teacher", "kernel", "depth", "expand")}})
    summary = train(cfg, tmp_path / "ph")
    metrics = [json.loads(x) for x in (tmp_path / "ph" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [(m["phase"], m["epoch"], "acc_max" in m, "acc_min" in m) for m in metrics]
    assert evaluated == [("teacher", 1, False, False), ("teacher", 2, True, False),
                         ("kernel", 1, False, False), ("kernel", 2, True, True),
                         ("depth", 1, False, False), ("depth", 2, True, True),
                         ("expand", 1, False, False), ("expand", 2, True, True)]
    assert summary["acc_max"] == metrics[-1]["acc_max"] and summary["acc_min"] == metrics[-1]["acc_min"]


def test_tracked_train_logs_to_a_file_without_progress_frames_and_reads_back_in_mlflow(tmp_path):
    """Output to a file (CI, nohup): one line per epoch, no carriage-return frames, the same in --log-file;
    --track leaves a FINISHED MLflow run with the config as params and one metric point per epoch."""
    from mlflow.tracking import MlflowClient

    root = _make_folder(tmp_path / "imgs")
    out, log, console = tmp_path / "run", tmp_path / "train.log", tmp_path / "console.txt"
    args = ["--data", str(root), "--on-bad-image", "skip", "--out", str(out), "--epochs-per-phase", "1",
            "--steps-per-epoch", "3", "--batch-size", "4", "--device", "cpu"]
    with console.open("w") as sink:  # output to a file, as under CI or nohup
        proc = subprocess.run([sys.executable, "-m", "factory", "train", *args, "--track"],
                              stdout=sink, stderr=subprocess.STDOUT, env=ENV, timeout=600)
    assert proc.returncode == 0, console.read_text()[-2000:]
    logged = subprocess.run([sys.executable, "-m", "factory", "--log-file", str(log), "train", *args[:4], "--out",
                             str(tmp_path / "logged"), *args[6:]], capture_output=True, text=True, env=ENV,
                            timeout=600)
    assert logged.returncode == 0, logged.stderr[-2000:]
    # read as bytes: text mode would turn every "\r" into "\n" and hide the frames
    for name, content in (("console", console.read_bytes().decode()), ("--log-file", log.read_bytes().decode())):
        assert "\r" not in content, f"{name} holds progress-bar frames"
        epochs = [line for line in content.splitlines() if line.startswith("[")]
        assert [e.split("]")[0] for e in epochs] == ["[teacher 1/1", "[kernel 1/1", "[depth 1/1", "[expand 1/1"], name
    assert "trained" in log.read_text()  # the command's result lines go to the log file too
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ofa-factory").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["train.batch_size"] == "4"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m.value for m in losses] == [m["loss"] for m in metrics]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.toml", "metrics.jsonl"}

    quiet = subprocess.run([sys.executable, "-m", "factory", "--quiet", "train", *args[:4], "--out",
                            str(tmp_path / "quiet"), *args[6:]], capture_output=True, text=True, env=ENV, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "[teacher" not in quiet.stderr and "trained" in quiet.stdout  # no per-epoch lines, the result stays


def test_track_given_a_store_mlflow_refuses_is_a_usage_error_not_a_traceback(tmp_path):
    """`--track some/folder` (MLflow 3 retired plain-folder stores): exit 2 naming --track and what works."""
    root = _make_folder(tmp_path / "imgs")
    args = ["--data", str(root), "--out", str(tmp_path / "run"), "--epochs-per-phase", "1", "--steps-per-epoch", "1"]
    proc = subprocess.run([sys.executable, "-m", "factory", "train", *args, "--track", str(tmp_path / "mlruns")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"--track {tmp_path / 'mlruns'}" in proc.stderr and "sqlite:///" in proc.stderr
