"""The runtimes' own benchmark tools time a package file in the settings its manifest records, and
bench/official_tools.py puts their medians next to ours (issue: latency claims an app can reproduce)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from export_fixtures import shared_package

from exports.official_tools import official_command, parse_benchmark_app_median

BENCH = Path(__file__).resolve().parents[1] / "bench" / "official_tools.py"


@pytest.fixture(scope="module")
def package(tiny_run, tmp_path_factory):
    return shared_package(tmp_path_factory, tiny_run, "min_fp32")


def test_every_file_records_the_session_its_latency_was_measured_in(package):
    manifest = json.loads((package / "manifest.json").read_text())
    settings = {f["format"]: f["runtime_settings"] for f in manifest["files"]}
    threads = manifest["metrics"]["threads"]
    assert settings["onnx"]["intra_op_num_threads"] == threads
    assert settings["openvino"]["config"]["INFERENCE_NUM_THREADS"] == threads
    assert settings["openvino"]["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert settings["tflite"]["num_threads"] == threads and settings["tflite"]["kernels"] in ("xnnpack", "builtin")
    choice = next(f["kernel_choice"] for f in manifest["files"] if f["format"] == "tflite")
    assert choice["chosen"] == settings["tflite"]["kernels"]
    assert set(choice["compared_p50_ms"]) == {"xnnpack", "builtin"}
    assert all(s["version"] for s in settings.values())
    card = (package / "README.md").read_text()
    assert f"num_threads={threads}" in card and "'INFERENCE_PRECISION_HINT': 'f32'" in card
    assert f"o.intra_op_num_threads = {threads}" in card
    assert "benchmark_app -m openvino/model.xml" in card and "litert-benchmark --model model.tflite" in card


def test_benchmark_app_command_carries_the_settings():
    config = {"INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "f32"}
    cmd = official_command("m.xml", {"runtime": "openvino", "device": "CPU", "config": config})
    assert cmd.argv[cmd.argv.index("-nthreads") + 1] == "2"
    assert cmd.argv[cmd.argv.index("-infer_precision") + 1] == "f32"
    assert parse_benchmark_app_median("[ INFO ]    Median:        331.41 us\n") == pytest.approx(0.33141)
    builtin = official_command("m.tflite", {"runtime": "tflite", "num_threads": 1, "kernels": "builtin"})
    assert "cannot select" in builtin.note


def test_bench_runs_each_official_tool_and_parses_its_median(package, tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(BENCH), str(package), "--rounds", "1", "--runs", "30",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {r["format"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"onnx", "tflite", "openvino"}
    for fmt, tool in (("openvino", "benchmark_app"), ("tflite", "litert-benchmark")):
        row = rows[fmt]
        assert row["tool"] == tool and not row["tool_error"], row["tool_error"]
        assert row["tool_runs"] == 1 and row["tool_p50_ms"] > 0
        assert row["factory_p50_ms"] > 0 and row["client_p50_ms"] > 0
    assert rows["onnx"]["tool_p50_ms"] is None and "not in ONNX Runtime's pip wheel" in rows["onnx"]["tool_note"]
    assert "| factory vs tool |" in done.stdout
