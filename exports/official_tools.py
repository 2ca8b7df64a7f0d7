"""The runtimes' own benchmark tools on a package file, with the session settings its manifest records.

`official_command` gives the command line an app developer runs to check a latency claim
(`benchmark_app` for OpenVINO, `litert-benchmark` for LiteRT; ONNX Runtime's pip wheel ships no tool,
so its `onnxruntime_perf_test` line is printed for those who build it). `run_official` runs an installed
tool and reads its median. `factory benchmark` prints the command; `bench/official_tools.py` runs it.

Import-cheap (stdlib only).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ToolCommand:
    """The tool's name, its argv (None when the tool cannot run here) and what it cannot reproduce."""

    tool: str
    argv: list[str]
    runnable: bool
    note: str = ""

    def shell(self) -> str:
        return " ".join(_quote(a) for a in self.argv)


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./:=+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def tool_path(name: str) -> str | None:
    """The tool next to this Python (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def official_command(path: str | Path, settings: dict[str, Any], runs: int = 1000) -> ToolCommand:
    """The runtime's own benchmark tool timing `path` as `settings` (a manifest's runtime_settings) say."""
    runtime = settings.get("runtime")
    path = str(path)
    if runtime == "openvino":
        config = settings.get("config") or {}
        argv = ["benchmark_app", "-m", path, "-d", settings.get("device", "CPU"), "-hint", "none",
                "-nstreams", str(config.get("NUM_STREAMS", 1)),
                "-nthreads", str(config.get("INFERENCE_NUM_THREADS", 1)),
                "-api", "sync", "-niter", str(runs)]
        if "INFERENCE_PRECISION_HINT" in config:
            argv += ["-infer_precision", str(config["INFERENCE_PRECISION_HINT"])]
        note = ("benchmark_app needs -hint none to take -nstreams/-nthreads; it still applies the latency "
                "hint's defaults, as the package's session does")
        return ToolCommand("benchmark_app", argv, tool_path("benchmark_app") is not None, note)
    if runtime == "tflite":
        argv = ["litert-benchmark", "--model", path, "--num_threads", str(settings.get("num_threads", 1)),
                "--num_runs", str(runs), "--warmup_runs", "20"]
        note = ""
        if settings.get("kernels") == "builtin":
            note = ("litert-benchmark cannot select LiteRT's builtin kernels: it times the default XNNPACK "
                    "delegate, which this file does not ship with (its manifest's kernel_choice has both figures)")
        return ToolCommand("litert-benchmark", argv, tool_path("litert-benchmark") is not None, note)
    if runtime == "onnxruntime":
        argv = ["onnxruntime_perf_test", "-e", "cpu", "-m", "times", "-r", str(runs),
                "-x", str(settings.get("intra_op_num_threads", 1)), "-y", str(settings.get("inter_op_num_threads", 1)),
                "-o", "99", path]
        note = ("onnxruntime_perf_test is not in ONNX Runtime's pip wheel (build it from source); "
                "bench/official_tools.py times a plain session with these settings instead")
        return ToolCommand("onnxruntime_perf_test", argv, tool_path("onnxruntime_perf_test") is not None, note)
    raise ValueError(f"runtime_settings.runtime: {runtime!r} is not allowed; allowed: onnxruntime, openvino, tflite")


class ToolFailed(RuntimeError):
    """The tool ran but did not finish or printed no median (message holds the end of its output)."""


def run_official(command: ToolCommand, timeout_s: float = 600.0) -> float:
    """Run `command` with the installed tool; its median latency in ms."""
    if not command.runnable:
        raise ToolFailed(f"{command.tool}: not installed here")
    argv = [tool_path(command.tool) or command.tool, *command.argv[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        if command.tool == "litert-benchmark":
            argv += ["--result_json", str(Path(tmp) / "result.json")]
        # CI=true: benchmark_app imports openvino, which would send a usage event (exports.runtime)
        env = {**os.environ, "CI": "true"}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False, env=env)
        output = done.stdout + done.stderr
        if done.returncode != 0:
            raise ToolFailed(f"{command.tool} exited {done.returncode}: {output[-800:]}")
        if command.tool == "litert-benchmark":
            return parse_litert_median(json.loads((Path(tmp) / "result.json").read_text()), output)
    return parse_benchmark_app_median(output)


def parse_benchmark_app_median(output: str) -> float:
    """benchmark_app's "Median: 331.41 us" (or ms) line -> ms."""
    match = re.search(r"Median:\s*([\d.]+)\s*(us|ms)", output)
    if match is None:
        raise ToolFailed(f"benchmark_app: no median in its output: {output[-800:]}")
    value = float(match.group(1))
    return value / 1e3 if match.group(2) == "us" else value


def parse_litert_median(result: dict[str, Any], output: str = "") -> float:
    """litert-benchmark's result JSON -> median ms (its JSON rounds to 0.01 ms; the printed line is no finer)."""
    try:
        return float(result["latency"]["median_ms"])
    except (KeyError, TypeError, ValueError):
        raise ToolFailed(f"litert-benchmark: no latency.median_ms in its result: {output[-800:]}") from None
