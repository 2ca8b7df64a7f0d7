"""`factory specialize` end to end on a tiny run: one feasible and one infeasible target. The feasible
one ships a verified package, the infeasible one is reported with its closest candidate, the report is
written, and the exit code says something failed. Then `factory benchmark` on the shipped package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROFILE = """
name = "{name}"
description = "test target {name}"
runtime = "onnxruntime"
precision = "fp32"
threads = 1
[constraints]
{constraints}
"""


def _factory(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "factory", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def specialized(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    from factory.run import load_run
    from targets.latency import build_latency_table, table_path
    from targets.profile import load_profile

    tmp = tmp_path_factory.mktemp("specialize")
    run_dir = tmp / "run"
    shutil.copytree(tiny_run, run_dir)
    run = load_run(run_dir)
    profiles = {
        "roomy": "latency_p50_ms = 50.0\nsize_mb = 20.0",
        "impossible": "latency_p50_ms = 0.0001\nsize_mb = 0.01",
    }
    paths = []
    for name, constraints in profiles.items():
        path = tmp / f"{name}.toml"
        path.write_text(PROFILE.format(name=name, constraints=constraints))
        build_latency_table(run.space, run.num_classes, load_profile(path), table_path(run_dir, name),
                            progress=False, samples=24)
        paths.append(path)
    fit = _factory("predictor", "fit", "--run", str(run_dir), "--samples", "30", "--holdout", "8",
                   "--val-images", "200", "--no-uniform")
    assert fit.returncode == 0, fit.stderr
    dist = tmp / "dist"
    res = _factory("specialize", "--run", str(run_dir), "--targets", ",".join(str(p) for p in paths),
                   "--population", "16", "--generations", "4", "--verify-top", "1", "--out", str(dist))
    return res, dist


def test_feasible_target_ships_while_infeasible_one_is_reported(specialized):
    res, dist = specialized
    assert res.returncode == 3, res.stderr  # only an infeasible target failed
    outcomes = {o["target"]: o for o in json.loads((dist / "report.json").read_text())}
    assert outcomes["roomy"]["status"] == "shipped"
    assert outcomes["impossible"]["status"] == "infeasible"
    assert "closest" in outcomes["impossible"]["message"].lower()
    package = dist / outcomes["roomy"]["package"]
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["files"][0]["format"] == "onnx"
    assert manifest["target"]["name"] == "roomy"
    assert outcomes["roomy"]["latency_p50_ms"] <= 50.0
    report = (dist / "report.md").read_text()
    assert "| roomy |" in report and "| impossible |" in report and "infeasible" in report
    html = (dist / "report.html").read_text()
    assert "<table>" in html and "impossible" in html
    assert "IMPOSSIBLE" in res.stdout.upper() and "shipped" in res.stdout


def test_benchmark_reports_every_file_with_its_verdict(specialized):
    _res, dist = specialized
    outcomes = {o["target"]: o for o in json.loads((dist / "report.json").read_text())}
    package = dist / outcomes["roomy"]["package"]
    res = _factory("benchmark", str(package), "--repeats", "20", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["passed"] is True
    (row,) = report["files"]
    assert row["failures"] == [] and 0 < row["latency_p50_ms"] <= row["latency_p95_ms"]
    text = _factory("benchmark", str(package), "--repeats", "20")
    assert "PASS" in text.stdout and "p50 ms" in text.stdout


def test_unknown_target_is_a_usage_error(tiny_run: Path, tmp_path: Path):
    res = _factory("specialize", "--run", str(tiny_run), "--targets", "no-such-target", "--out", str(tmp_path))
    assert res.returncode == 2
    assert "no-such-target" in res.stderr and "Traceback" not in res.stderr
