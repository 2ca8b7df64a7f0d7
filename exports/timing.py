"""Timing model files: the one method behind latency tables, probe bundles, the pick and the export gate.

Sessions come from `exports.runtime.load_session`, so a table measured here, a table measured on a
device and a package's gate time the same sessions. The method:

* per round, every model gets `warmup` untimed runs, then `repeats` timed runs (round median, round p95);
* the models are interleaved, in a freshly shuffled (seeded) order each round, so a burst of load from
  another tenant hits all of them alike instead of biasing whichever ran then;
* p50 = the lowest round median (another process only ever adds time; the least-disturbed round is
  the reproducible figure), p95 = the median round p95 (tails are its subject);
* multi-thread targets get a contention check (`canary`: one model on T threads and on 1 thread, at
  both ends of every round); a round where T threads ran more than CONTENTION_RATIO x slower than 1
  thread is set aside and more rounds are timed, for at most `patience_s`.
The measurements behind these choices (round count, ratio, patience) are dated entries in
docs/decisions.md.

Import-cheap (numpy + stdlib; a runtime is imported when its session opens): a probe bundle carries
this file with exports/__init__.py and exports/runtime.py, and the bundle's runner.py calls `main`:

    python runner.py                 # reads manifest.json next to it, writes RESULTS.json
    python runner.py --rounds 9 --repeats 100 --out /tmp/RESULTS.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exports import RUNTIMES
from exports.runtime import Session, load_session, runtime_of

RESULTS_SCHEMA = 1
TIMING_METHOD = ("interleaved shuffled rounds; p50 = lowest round median, p95 = median of round p95s; "
                 "multi-thread: contended rounds (T threads > 1.5x 1 thread) set aside")
DEFAULT_WARMUP = 10
DEFAULT_REPEATS = 50
DEFAULT_ROUNDS = 15  # fewer rounds made 2-thread tables swing from one measurement to the next
CONTENTION_RATIO = 1.5  # T-thread vs 1-thread median of the same model above this = a contended round
DEFAULT_PATIENCE_S = 60.0  # how long contended rounds are waited out (longest contention seen here: ~49 s)
RECHECK_WINDOW_S = 30.0  # how long a p50 over budget is re-timed before it is believed

Runner = Callable[[], object]
Canary = tuple[Runner, Runner]  # (one model on the target's threads, the same model on 1 thread)


def cpu_model() -> str:
    """The CPU model name: /proc/cpuinfo "model name" (x86), else "Hardware"/"Model" (ARM boards),
    else platform.processor()."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    for key in ("model name", "hardware", "model"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine()


def runtime_version(runtime: str) -> str:
    """Version string of the runtime package that loads the models."""
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    if runtime == "openvino":
        import openvino

        return f"openvino {openvino.get_version()}"
    if runtime == "tflite":
        try:
            import ai_edge_litert

            return f"ai-edge-litert {getattr(ai_edge_litert, '__version__', 'unknown')}"
        except ImportError:
            import tflite_runtime  # type: ignore[import-not-found]

            return f"tflite_runtime {tflite_runtime.__version__}"
    raise ValueError(f"runtime: {runtime!r} is not allowed; allowed: {', '.join(RUNTIMES)}")


def check_runtime(paths: Sequence[Path], runtime: str) -> None:
    """ValueError naming the first file that `runtime` does not load (files pick their runtime by suffix)."""
    for path in paths:
        if runtime_of(path) != runtime:
            raise ValueError(f"{path}: runs in {runtime_of(path)}, not in runtime {runtime!r}")


def load_runner(path: Path, threads: int, rng: np.random.Generator) -> Runner:
    """One inference of `path` on a fixed random input, in the session a package client gets."""
    return load_session(path, threads).raw_runner(rng)


def load_canary(paths: Sequence[Path], threads: int, rng: np.random.Generator) -> Canary | None:
    """The contention check's pair for a multi-thread target (None for 1 thread): the largest file
    (it parallelises best, so its T-thread/1-thread ratio sits furthest below CONTENTION_RATIO when
    the machine is quiet) on the target's threads and on 1 thread."""
    if threads <= 1 or not paths:
        return None
    largest = max(paths, key=lambda p: Path(p).stat().st_size)
    return load_runner(largest, threads, rng), load_runner(largest, 1, rng)


def summarize_rounds(round_medians: Sequence[float], round_p95s: Sequence[float]) -> tuple[float, float]:
    """A model's reported (p50, p95) from its per-round figures: the lowest round median and the median
    round p95. Every latency this project compares with a budget is summarised here, the same way."""
    return float(np.min(round_medians)), float(np.median(round_p95s))


@dataclass(frozen=True)
class RoundsTiming:
    """Per-runner (p50_ms, p95_ms) and how the rounds went (`contended`: no clean round was found)."""

    timings: list[tuple[float, float]]
    rounds: int
    contended_rounds: int

    @property
    def contended(self) -> bool:
        return self.contended_rounds >= self.rounds

    def to_dict(self) -> dict[str, object]:
        """How the rounds went, under keys that sit beside the planned `rounds` of a timing record."""
        return {"rounds_timed": self.rounds, "contended_rounds": self.contended_rounds}


def _median_and_p95(run: Runner, warmup: int, repeats: int) -> tuple[float, float]:
    for _ in range(warmup):
        run()
    samples = np.empty(repeats)
    for r in range(repeats):
        start = time.perf_counter_ns()
        run()
        samples[r] = time.perf_counter_ns() - start
    return float(np.median(samples)) / 1e6, float(np.percentile(samples, 95)) / 1e6


def is_contended(canary: Canary, warmup: int = 5, repeats: int = 30) -> bool:
    """Is the machine, right now, too contended for a multi-thread timing to mean anything? A T-thread
    run slower than CONTENTION_RATIO x the 1-thread run cannot be the device's honest figure."""
    many = _median_and_p95(canary[0], warmup, repeats)[0]
    one = _median_and_p95(canary[1], warmup, repeats)[0]
    return many > CONTENTION_RATIO * one


def time_interleaved(runners: Sequence[Runner], *, warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                     rounds: int = DEFAULT_ROUNDS, seed: int = 0, progress: Callable[[int], None] | None = None,
                     canary: Canary | None = None, min_clean: int | None = None,
                     patience_s: float = DEFAULT_PATIENCE_S) -> RoundsTiming:
    """(p50_ms, p95_ms) per runner over shuffled rounds (see the module docstring); with a `canary`,
    contended rounds are set aside and waited out (at most `patience_s` past the planned rounds)."""
    rng = random.Random(seed)
    min_clean = max(1, min(rounds, min_clean or (rounds + 1) // 2))
    per_round: list[tuple[bool, list[tuple[float, float]]]] = []
    order = list(range(len(runners)))
    deadline: float | None = None
    while True:
        clean = sum(ok for ok, _ in per_round)
        if len(per_round) >= rounds:
            if clean >= min_clean:
                break
            deadline = deadline or time.monotonic() + patience_s
            if time.monotonic() > deadline:
                break
            time.sleep(1.0)  # let a burst of contention pass instead of timing into it
        rng.shuffle(order)
        contended = canary is not None and is_contended(canary)
        figures: list[tuple[float, float]] = [(0.0, 0.0)] * len(runners)
        for i in order:
            figures[i] = _median_and_p95(runners[i], warmup, repeats)
        contended = contended or (canary is not None and is_contended(canary))
        per_round.append((not contended, figures))
        if progress is not None and len(per_round) <= rounds:
            progress(1)
    used = [figs for ok, figs in per_round if ok] or [figs for _, figs in per_round]
    timings = [summarize_rounds([figs[i][0] for figs in used], [figs[i][1] for figs in used])
               for i in range(len(runners))]
    return RoundsTiming(timings, rounds=len(per_round), contended_rounds=sum(not ok for ok, _ in per_round))


@dataclass(frozen=True)
class Timing:
    """Latency of single batch-1 inferences, in milliseconds."""

    p50_ms: float
    p95_ms: float
    samples: list[float] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "repeats": len(self.samples)}


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in 0..100."""
    return float(np.percentile(np.asarray(samples), q))


def time_session(session: Session, x: np.ndarray, warmup: int = 20, repeats: int = 200) -> Timing:
    """Warm up, then time `repeats` single inferences of `x` (batch 1, NCHW float32) one by one: every
    sample kept, for benches comparing sessions; budgets use `measure_latency`."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    x = np.ascontiguousarray(x[:1], dtype=np.float32)
    for _ in range(warmup):
        session.run_one(x)
    samples = []
    clock = time.perf_counter
    for _ in range(repeats):
        t0 = clock()
        session.run_one(x)
        samples.append((clock() - t0) * 1e3)
    return Timing(p50_ms=statistics.median(samples), p95_ms=percentile(samples, 95), samples=samples)


@dataclass(frozen=True)
class Latency:
    """A file's latency as budgets are checked: `rounds` rounds of `repeats` runs (after `warmup`), p50 =
    lowest round median, p95 = median round p95, contended rounds set aside (`time_interleaved`)."""

    p50_ms: float
    p95_ms: float
    rounds: int
    contended_rounds: int
    rechecked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "rounds": self.rounds,
                "contended_rounds": self.contended_rounds, "rechecked": self.rechecked}


def measure_latency(path: Path, x: np.ndarray, threads: int, *, rounds: int = 3, warmup: int = 20,
                    repeats: int = 100, over_ms: float | None = None, recheck_pause_s: float = 2.0,
                    recheck_window_s: float = RECHECK_WINDOW_S) -> Latency:
    """Time the file at `path` on batch-1 input `x` with the one method every budget check uses.

    A p50 above `over_ms` (the budget) is confirmed before it is believed: the file is timed again, in
    fresh sessions, every `recheck_pause_s` for up to `recheck_window_s`, and the lowest figures count
    (another tenant only adds time). Multi-thread files are also timed on 1 thread each round to spot
    contended rounds. Why a window, not one recheck: slowdowns on a shared host last from a second to
    about a minute (docs/decisions.md)."""
    x = np.ascontiguousarray(x[:1], dtype=np.float32)

    def once() -> Latency:
        session = load_session(path, threads)
        canary = None
        if threads > 1:
            single = load_session(path, 1)
            canary = (lambda: session.run_one(x), lambda: single.run_one(x))
        timed = time_interleaved([lambda: session.run_one(x)], warmup=warmup, repeats=repeats, rounds=rounds,
                                 canary=canary)
        (p50, p95), = timed.timings
        return Latency(p50, p95, timed.rounds, timed.contended_rounds)

    best = once()
    deadline = time.monotonic() + recheck_window_s
    while over_ms is not None and best.p50_ms > over_ms and time.monotonic() < deadline:
        time.sleep(recheck_pause_s)
        again = once()
        best = Latency(min(best.p50_ms, again.p50_ms), min(best.p95_ms, again.p95_ms), best.rounds + again.rounds,
                       best.contended_rounds + again.contended_rounds, rechecked=True)
    return best


def device_info(runtime: str) -> dict[str, Any]:
    """What a results file says about the machine that timed it (a table is only used on its match)."""
    return {"cpu_model": cpu_model(), "machine": platform.machine(), "system": platform.system(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "runtime_version": runtime_version(runtime)}


def run_bundle(bundle: Path, out: Path, *, warmup: int, repeats: int, rounds: int, seed: int = 0) -> dict:
    """Time every model listed in bundle/manifest.json; write and return the results document."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    runtime, threads = manifest["runtime"], int(manifest["threads"])
    rng = np.random.default_rng(seed)
    files = [bundle / m["file"] for m in manifest["models"]]
    check_runtime(files, runtime)
    runners = [load_runner(f, threads, rng) for f in files]
    timed = time_interleaved(runners, warmup=warmup, repeats=repeats, rounds=rounds, seed=seed,
                             canary=load_canary(files, threads, rng))
    results = {
        "schema": RESULTS_SCHEMA,
        "target": manifest["target"],
        "runtime": runtime,
        "precision": manifest["precision"],
        "threads": threads,
        "device": device_info(runtime),
        "timing": {"warmup": warmup, "repeats": repeats, "rounds": rounds, "seed": seed,
                   "method": TIMING_METHOD, **timed.to_dict()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "manifest": manifest,
        "models": [{"id": m["id"], "p50_ms": p50, "p95_ms": p95}
                   for m, (p50, p95) in zip(manifest["models"], timed.timings, strict=True)],
    }
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out)
    return results


def main(argv: Sequence[str] | None = None, default_bundle: Path | None = None) -> int:
    """The probe bundle's command line (its runner.py passes its own folder as `default_bundle`)."""
    parser = argparse.ArgumentParser(description="Time the probe models of this bundle; write RESULTS.json.")
    parser.add_argument("--bundle", type=Path, default=default_bundle, required=default_bundle is None,
                        help="bundle folder holding manifest.json (default: the runner's folder)")
    parser.add_argument("--out", type=Path, default=None, help="results file (default: BUNDLE/RESULTS.json)")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out or args.bundle / "RESULTS.json"
    run_bundle(args.bundle, out, warmup=args.warmup, repeats=args.repeats, rounds=args.rounds, seed=args.seed)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
