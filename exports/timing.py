"""Timing model files: the one method behind latency tables, probe bundles, the pick and the export gate.

Sessions come from `exports.runtime.load_session`, so a table measured here, a table measured on a
device and a package's gate time the same sessions. The method:

* per round, every model gets `warmup` untimed runs, then `repeats` timed runs;
* the models are interleaved, in a freshly shuffled (seeded) order each round, so a burst of load from
  another tenant hits all of them alike instead of biasing whichever ran then;
* p50 = the median of every timed run of the clean rounds, p95 = their 95th percentile (numpy's
  linear interpolation): the figures any plain timing loop, `benchmark_app` or `litert-benchmark`
  reports; `p50_spread` = the slowest clean round's median minus p50, the run-to-run variation that
  budgets are met with (a pick must fit its p50 budget with it);
* multi-thread targets get a contention check (`canary`: one model on T threads and on 1 thread, at
  both ends of every round); a round where T threads ran more than CONTENTION_RATIO x slower than 1
  thread is set aside and more rounds are timed, for at most `patience_s`; a slowdown that outlasts the
  patience is the state the machine is in, and then every round counts. The criterion never looks at a
  budget or at the figure being measured, and nothing is re-timed because it came out high.
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
TIMING_METHOD = ("interleaved shuffled rounds; p50 / p95 = median / 95th percentile of all timed runs of the "
                 "clean rounds; multi-thread: contended rounds (T threads > 1.5x 1 thread) set aside while "
                 "a short wait finds enough clean ones, else counted")
DEFAULT_WARMUP = 10
DEFAULT_REPEATS = 50
DEFAULT_ROUNDS = 15  # fewer rounds made 2-thread tables swing from one measurement to the next
CONTENTION_RATIO = 1.5  # T-thread vs 1-thread median of the same model above this = a contended round
CONTENDED_PAUSE_S = 0.05  # between rounds timed after the planned ones because too few were clean
DEFAULT_PATIENCE_S = 20.0  # how long contended rounds are waited out; a longer slowdown is counted
ROUND_TARGET_MS = 60.0  # a runner's timed runs per round are capped at about this much time (see _run_plan)
MIN_REPEATS = 5
PLAN_CALLS = 2  # untimed calls per runner before the rounds: one to initialise, one to size the plan
KERNEL_PREFERENCE = 0.05  # builtin TFLite kernels ship only when >5% faster than the default delegate

Runner = Callable[[], object]
Canary = tuple[Runner, Runner]  # (one model on the target's threads, the same model on 1 thread)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
        from exports.runtime import import_openvino

        return f"openvino {import_openvino().get_version()}"
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


@dataclass(frozen=True)
class KernelChoice:
    """Which LiteRT kernels a .tflite file ships with, and the comparison that chose them (p50 ms each)."""

    kernels: str
    p50_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.kernels, "compared_p50_ms": {k: round(v, 6) for k, v in self.p50_ms.items()},
                "rule": f"builtin only when more than {KERNEL_PREFERENCE:.0%} faster than xnnpack (LiteRT's "
                        f"default delegate)"}


def choose_tflite_kernels(path: Path, threads: int, *, rounds: int = 2, repeats: int = 30,
                          warmup: int = 5) -> KernelChoice:
    """Time LiteRT's default delegate (XNNPACK) and its builtin kernels on `path`, interleaved, and choose.

    The default wins unless the builtin kernels are more than KERNEL_PREFERENCE faster: it is what a
    plain `Interpreter(model_path=...)` and `litert-benchmark` run. The choice is only a choice: the
    file's claimed latency is a fresh measurement in the chosen configuration."""
    rng = np.random.default_rng(0)
    kernels = ("xnnpack", "builtin")
    runners = [load_session(path, threads, tflite_kernels=k).raw_runner(rng) for k in kernels]
    timed = time_interleaved(runners, warmup=warmup, repeats=repeats, rounds=rounds)
    p50 = {k: t[0] for k, t in zip(kernels, timed.timings, strict=True)}
    chosen = "builtin" if p50["builtin"] < (1 - KERNEL_PREFERENCE) * p50["xnnpack"] else "xnnpack"
    return KernelChoice(chosen, p50)


def open_for_timing(path: Path, threads: int,
                    settings: dict[str, Any] | None = None) -> tuple[Session, KernelChoice | None]:
    """The session a file is timed (and shipped) in: with `settings` when given (a package's record),
    else the default configuration, except that a .tflite file gets the faster of its kernel choices."""
    if settings or runtime_of(path) != "tflite":
        return load_session(path, threads, settings=settings), None
    choice = choose_tflite_kernels(path, threads)
    return load_session(path, threads, tflite_kernels=choice.kernels), choice


def load_runner(path: Path, threads: int, rng: np.random.Generator) -> Runner:
    """One inference of `path` on a fixed random input, in the session its package would ship."""
    return open_for_timing(path, threads)[0].raw_runner(rng)


def load_canary(paths: Sequence[Path], threads: int, rng: np.random.Generator) -> Canary | None:
    """The contention check's pair for a multi-thread target (None for 1 thread): the largest file
    (it parallelises best, so its T-thread/1-thread ratio sits furthest below CONTENTION_RATIO when
    the machine is quiet) on the target's threads and on 1 thread."""
    if threads <= 1 or not paths:
        return None
    largest = max(paths, key=lambda p: Path(p).stat().st_size)
    return load_runner(largest, threads, rng), load_runner(largest, 1, rng)


def summarize_rounds(round_samples: Sequence[np.ndarray]) -> tuple[float, float, float]:
    """A model's (p50, p95, p50_spread) in ms from its timed runs, per round (ns): median and 95th
    percentile of all runs pooled, and how far the slowest round's median lies above that median. Every
    latency this project compares with a budget is summarised here, the same way."""
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in round_samples]) / 1e6
    p50 = float(np.median(pooled))
    slowest_round = max(float(np.median(r)) for r in round_samples) / 1e6
    return p50, float(np.percentile(pooled, 95)), max(0.0, slowest_round - p50)


@dataclass(frozen=True)
class RoundsTiming:
    """Per-runner (p50_ms, p95_ms) and p50 spreads (ms), and how the rounds went (`contended_counted`: too
    few clean rounds came within the patience, so the figures pool every round, contended ones too)."""

    timings: list[tuple[float, float]]
    rounds: int
    contended_rounds: int
    spreads: list[float] = field(default_factory=list)
    contended_counted: bool = False

    def to_dict(self) -> dict[str, object]:
        """How the rounds went, under keys that sit beside the planned `rounds` of a timing record."""
        return {"rounds_timed": self.rounds, "contended_rounds": self.contended_rounds,
                "contended_counted": self.contended_counted}


def _timed_runs(run: Runner, warmup: int, repeats: int) -> np.ndarray:
    """`repeats` wall times (ns) of `run` after `warmup` untimed runs."""
    for _ in range(warmup):
        run()
    samples = np.empty(repeats)
    for r in range(repeats):
        start = time.perf_counter_ns()
        run()
        samples[r] = time.perf_counter_ns() - start
    return samples


def contention_ratio(canary: Canary, warmup: int = 5, repeats: int = 30) -> float:
    """Median T-thread run / median 1-thread run of the canary's model, the two sides in alternation, so a
    swing of the whole host hits both alike and only the T-thread side's own slowdown moves the ratio."""
    many, one = np.empty(repeats), np.empty(repeats)
    for _ in range(warmup):
        canary[0]()
        canary[1]()
    for r in range(repeats):
        start = time.perf_counter_ns()
        canary[0]()
        middle = time.perf_counter_ns()
        canary[1]()
        many[r], one[r] = middle - start, time.perf_counter_ns() - middle
    return float(np.median(many)) / float(np.median(one))


def is_contended(canary: Canary, warmup: int = 5, repeats: int = 30) -> bool:
    """Is the machine, right now, too contended for a multi-thread timing to mean anything? A T-thread
    run slower than CONTENTION_RATIO x the 1-thread run is not the device's figure."""
    return contention_ratio(canary, warmup, repeats) > CONTENTION_RATIO


def _run_plan(runners: Sequence[Runner], warmup: int, repeats: int) -> list[tuple[int, int]]:
    """(warm-up, timed runs) per round for each runner: `repeats` while that fits in ROUND_TARGET_MS, fewer
    (at least MIN_REPEATS) for slower models, so a table of 224-px models that take 10-100 ms each is timed
    in minutes instead of an hour; sub-millisecond models keep the full plan."""
    plan = []
    for run in runners:
        for _ in range(PLAN_CALLS - 1):
            run()  # lazy initialisation, not timed
        start = time.perf_counter_ns()
        run()
        ms = (time.perf_counter_ns() - start) / 1e6
        timed = max(MIN_REPEATS, min(repeats, int(ROUND_TARGET_MS / max(ms, 1e-3))))
        plan.append((max(2, min(warmup, timed // 5)) if timed < repeats else warmup, timed))
    return plan


def time_interleaved(runners: Sequence[Runner], *, warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                     rounds: int = DEFAULT_ROUNDS, seed: int = 0, progress: Callable[[int], None] | None = None,
                     canary: Canary | None = None, min_clean: int | None = None,
                     patience_s: float = DEFAULT_PATIENCE_S) -> RoundsTiming:
    """(p50_ms, p95_ms) per runner over shuffled rounds (see the module docstring); with a `canary`,
    contended rounds are set aside and waited out (at most `patience_s` past the planned rounds)."""
    rng = random.Random(seed)
    min_clean = max(1, min(rounds, min_clean or (rounds + 1) // 2))
    per_round: list[tuple[bool, list[np.ndarray]]] = []
    order = list(range(len(runners)))
    deadline: float | None = None
    plan = _run_plan(runners, warmup, repeats)
    while True:
        clean = sum(ok for ok, _ in per_round)
        if len(per_round) >= rounds:
            if clean >= min_clean:
                break
            deadline = deadline or time.monotonic() + patience_s
            if time.monotonic() > deadline:
                break
            time.sleep(CONTENDED_PAUSE_S)  # let a burst of contention pass instead of timing into it
        rng.shuffle(order)
        contended = canary is not None and is_contended(canary)
        figures: list[np.ndarray] = [np.empty(0)] * len(runners)
        for i in order:
            figures[i] = _timed_runs(runners[i], *plan[i])
        contended = contended or (canary is not None and is_contended(canary))
        per_round.append((not contended, figures))
        if progress is not None and len(per_round) <= rounds:
            progress(1)
    clean_rounds = [figs for ok, figs in per_round if ok]
    # a slowdown that outlasted the patience is the state the machine is in: all rounds count then
    counted = len(clean_rounds) < min_clean
    used = [figs for _, figs in per_round] if counted else clean_rounds
    summaries = [summarize_rounds([figs[i] for figs in used]) for i in range(len(runners))]
    return RoundsTiming([(p50, p95) for p50, p95, _ in summaries], rounds=len(per_round),
                        contended_rounds=len(per_round) - len(clean_rounds),
                        spreads=[spread for _, _, spread in summaries], contended_counted=counted)


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
    """A file's latency as budgets are checked (`time_interleaved`'s statistic), the rounds behind it, and
    the exact session settings it was measured with (`Session.settings`; the package records them)."""

    p50_ms: float
    p95_ms: float
    p50_spread_ms: float
    rounds: int
    contended_rounds: int
    settings: dict[str, Any] = field(default_factory=dict)
    kernel_choice: KernelChoice | None = None
    contended_counted: bool = False

    @property
    def p50_with_spread_ms(self) -> float:
        """p50 plus its run-to-run variation: what must fit a p50 budget at export time."""
        return self.p50_ms + self.p50_spread_ms

    def to_dict(self) -> dict[str, Any]:
        return {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p50_spread_ms": self.p50_spread_ms,
                "rounds": self.rounds, "contended_rounds": self.contended_rounds,
                "contended_counted": self.contended_counted, "settings": self.settings}


def measure_latency(path: Path, threads: int, *, rounds: int = 3, warmup: int = 20, repeats: int = 100,
                    settings: dict[str, Any] | None = None) -> Latency:
    """Time the file at `path` with the one method every budget check uses: the runtime's inference call
    on a bound batch-1 input of random values (`Session.raw_runner`, what the runtimes' own benchmark
    tools time; latency does not depend on the input's values).

    `settings`: open the file exactly so (a package's record); without them the file is opened as it
    would ship (`open_for_timing`: a .tflite file gets the faster kernels). Multi-thread files are also
    timed on 1 thread each round to spot contended rounds. Measured once: no figure is re-timed because
    of its value."""
    rng = np.random.default_rng(0)
    session, choice = open_for_timing(path, threads, settings)
    canary = None
    if threads > 1:
        canary = (session.raw_runner(rng), load_session(path, 1, settings=session.settings).raw_runner(rng))
    timed = time_interleaved([session.raw_runner(rng)], warmup=warmup, repeats=repeats, rounds=rounds,
                             canary=canary)
    (p50, p95), = timed.timings
    return Latency(p50, p95, timed.spreads[0], timed.rounds, timed.contended_rounds, dict(session.settings), choice,
                   contended_counted=timed.contended_counted)


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
    sessions = [open_for_timing(f, threads)[0] for f in files]
    runners = [session.raw_runner(rng) for session in sessions]
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
        "models": [{"id": m["id"], "p50_ms": p50, "p95_ms": p95, "settings": session.settings}
                   for m, (p50, p95), session in zip(manifest["models"], timed.timings, sessions, strict=True)],
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
