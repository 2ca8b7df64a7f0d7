"""Do the packages' latency claims hold when someone else times them? Per file of a dist/ (or packages):

  claim     the manifest's p50 (and the budget it was checked against)
  factory   `factory benchmark`'s figure now: exports.timing.measure_latency in the recorded settings
  tool      the runtime's own tool with the same settings (exports.official_tools): OpenVINO's
            `benchmark_app -api sync`, LiteRT's `litert-benchmark`; its median per run (ONNX Runtime's
            wheel has no tool: none)
  client    a plain app loop: examples/classify.py's Model (the documented load, recorded settings),
            `logits()` on one preprocessed image, median of every run

The three measurements are interleaved in shuffled order, `--rounds` times, at whatever load the
machine has (run it idle): factory and client pool their runs (p50 = median of all runs, the project's
statistic); the tool's figure is the median of its per-run medians. Goal: factory within +-10% of the
tool, and every column within the budget.

    .venv/bin/python bench/official_tools.py dist [--rounds 3] [--runs 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exports.official_tools import ToolFailed, official_command, run_official  # noqa: E402
from exports.timing import measure_latency  # noqa: E402
from exports.verify import VerificationSet, read_manifest  # noqa: E402

TOLERANCE = 0.10


def _classify_module() -> Any:
    spec = importlib.util.spec_from_file_location("classify_example", ROOT / "examples" / "classify.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def packages_under(paths: list[Path]) -> list[Path]:
    found = []
    for p in paths:
        found += [m.parent for m in sorted(p.rglob("manifest.json"))] if p.is_dir() else []
    if not found:
        raise SystemExit(f"no package (manifest.json) under {', '.join(map(str, paths))}")
    return found


def client_loop(model: Any, x_hwc: np.ndarray, runs: int, warmup: int = 20) -> np.ndarray:
    for _ in range(warmup):
        model.logits(x_hwc)
    samples = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        model.logits(x_hwc)
        samples[i] = time.perf_counter_ns() - start
    return samples / 1e6


def compare_file(package: Path, manifest: dict[str, Any], entry: dict[str, Any], *, rounds: int, runs: int,
                 seed: int = 0) -> dict[str, Any]:
    settings = entry.get("runtime_settings")
    if not settings:
        raise SystemExit(f"{package / 'manifest.json'}: files[{entry['path']!r}] has no runtime_settings "
                         "(a package written before latency settings were recorded): export it again")
    threads = int(manifest.get("metrics", {}).get("threads") or 1)
    path = package / entry["path"]
    vset = VerificationSet.load(package / manifest["verification"]["path"])
    x_nchw = vset.inputs[:1]
    x_hwc = np.ascontiguousarray(x_nchw[0].transpose(1, 2, 0))
    client = _classify_module().Model(package, entry)
    command = official_command(path, settings, runs=runs)
    ours: list[float] = []
    tool: list[float] = []
    client_runs: list[np.ndarray] = []
    ours_runs: list[float] = []
    tool_error = "" if command.runnable else f"{command.tool} not installed here"
    jobs = ["factory", "client"] + (["tool"] if command.runnable else [])
    order = random.Random(seed)
    for _ in range(rounds):
        order.shuffle(jobs)
        for job in jobs:
            if job == "factory":
                lat = measure_latency(path, threads, rounds=1, warmup=20, repeats=runs, settings=settings)
                ours.append(lat.p50_ms)
                ours_runs.append(lat.p50_ms)
            elif job == "client":
                client_runs.append(client_loop(client, x_hwc, runs))
            else:
                try:
                    tool.append(run_official(command))
                except (ToolFailed, OSError) as exc:
                    tool_error = str(exc)[:300]
    # factory: each round is one measure_latency of `runs` runs; the rounds' p50s are pooled by their median
    factory_p50 = float(np.median(ours))
    claim = manifest.get("metrics", {}).get("files", {}).get(entry["path"], {})
    budgets = manifest.get("verification", {}).get("budgets") or {}
    tool_p50 = float(np.median(tool)) if tool else None
    row = {
        "package": str(package), "file": entry["path"], "format": entry["format"], "precision": entry["precision"],
        "threads": threads, "settings": settings, "budget_p50_ms": budgets.get("latency_p50_ms"),
        "claim_p50_ms": claim.get("latency_p50_ms"), "factory_p50_ms": factory_p50,
        "tool": command.tool, "tool_command": command.shell(), "tool_note": command.note,
        "tool_p50_ms": tool_p50, "tool_runs": len(tool), "tool_error": tool_error,
        "client_p50_ms": float(np.median(np.concatenate(client_runs))),
    }
    row["factory_vs_tool"] = None if tool_p50 is None else factory_p50 / tool_p50 - 1
    figures = [row[k] for k in ("claim_p50_ms", "factory_p50_ms", "tool_p50_ms", "client_p50_ms")]
    row["within_budget"] = (None if row["budget_p50_ms"] is None
                            else all(v <= row["budget_p50_ms"] for v in figures if v is not None))
    return row


def _settings_label(st: dict[str, Any], precision: str, threads: int) -> str:
    if st["runtime"] == "openvino":
        return f"{precision}, {st['config'].get('INFERENCE_PRECISION_HINT', 'default')} hint, {threads} thread(s)"
    if st["runtime"] == "tflite":
        return f"{precision}, {st['kernels']} kernels, {threads} thread(s)"
    return f"{precision}, {threads} thread(s)"


def render(rows: list[dict[str, Any]]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = ["| package / file | settings | claim p50 (budget) | factory benchmark | runtime's tool | plain client "
             "| factory vs tool | within budget |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        what = _settings_label(r["settings"], r["precision"], r["threads"])
        vs = "-" if r["factory_vs_tool"] is None else f"{100 * r['factory_vs_tool']:+.1f}%"
        budget = "-" if r["budget_p50_ms"] is None else f"{r['budget_p50_ms']:g}"
        tool = f"{ms(r['tool_p50_ms'])} ({r['tool']})" if r["tool_p50_ms"] is not None else f"- ({r['tool']})"
        ok = {None: "-", True: "yes", False: "**no**"}[r["within_budget"]]
        lines.append(f"| {Path(r['package']).name}/{r['file']} | {what} | {ms(r['claim_p50_ms'])} ({budget}) | "
                     f"{ms(r['factory_p50_ms'])} | {tool} | {ms(r['client_p50_ms'])} | {vs} | {ok} |")
    for r in rows:
        if r["tool_note"] or r["tool_error"]:
            lines.append(f"\n{Path(r['package']).name}/{r['file']}: {r['tool_error'] or r['tool_note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", type=Path, nargs="+", help="dist/ folders or package folders")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the three measurements")
    parser.add_argument("--runs", type=int, default=1000, help="timed runs per measurement per round")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = []
    for package in packages_under(args.paths):
        manifest = read_manifest(package)
        for entry in manifest["files"]:
            print(f"timing {package.name}/{entry['path']} ...", file=sys.stderr, flush=True)
            rows.append(compare_file(package, manifest, entry, rounds=args.rounds, runs=args.runs))
    print(render(rows))
    off = [r for r in rows if r["factory_vs_tool"] is not None and abs(r["factory_vs_tool"]) > TOLERANCE]
    over = [r for r in rows if r["within_budget"] is False]
    print(f"\n{len(rows)} file(s): {len(off)} outside +-{TOLERANCE:.0%} of their tool, {len(over)} over budget "
          f"in some column")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
