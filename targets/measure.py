"""Timing real exported files on this machine, with the one timing method of `exports.timing`.

See `exports.timing` for the method (warm-up, repeats, interleaved shuffled rounds, median / 95th
percentile of all timed runs, contended rounds set aside; .tflite files in the faster of their
kernels). Everything here calls that code, so a number measured by `measure_file`, by
`factory targets measure` and by a probe bundle on a device mean the same thing.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from exports import timing
from exports.progress import progress_bar
from exports.runtime import runtime_of
from exports.timing import DEFAULT_REPEATS, DEFAULT_ROUNDS, DEFAULT_WARMUP, RoundsTiming
from supernets.space import SearchSpace
from targets.profile import TargetProfile

if TYPE_CHECKING:
    from targets.table import LatencyTable


def measure_files(paths: Sequence[Path], threads: int = 1, *, runtime: str | None = None,
                  warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                  rounds: int = DEFAULT_ROUNDS, seed: int = 0,
                  progress: bool = False) -> list[tuple[float, float]]:
    """(p50_ms, p95_ms) of each model file, timed interleaved (the fair way to compare them)."""
    return measure_files_rounds(paths, threads, runtime=runtime, warmup=warmup, repeats=repeats, rounds=rounds,
                                seed=seed, progress=progress).timings


def measure_files_rounds(paths: Sequence[Path], threads: int = 1, *, runtime: str | None = None,
                         warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                         rounds: int = DEFAULT_ROUNDS, seed: int = 0,
                         progress: bool = False) -> RoundsTiming:
    """`measure_files` with how the rounds went (rounds timed, contended rounds set aside). Each file runs
    in the runtime its suffix names; a given `runtime` is checked against them."""
    if threads < 1:
        raise ValueError(f"threads: {threads} is not allowed; expected an integer >= 1")
    rng = np.random.default_rng(seed)
    paths = [Path(p) for p in paths]
    if runtime is not None:
        timing.check_runtime(paths, runtime)
    runtimes = [runtime_of(p) for p in paths]
    runners = load_runners(paths, threads, seed) if set(runtimes) <= OPENED_IN_PARALLEL else \
        [timing.load_runner(p, threads, rng) for p in paths]
    canary = timing.load_canary(paths, threads, rng) if len(set(runtimes)) == 1 else None
    with progress_bar(total=rounds, desc="timing", unit="round", enabled=progress) as bar:
        return timing.time_interleaved(runners, warmup=warmup, repeats=repeats, rounds=rounds, seed=seed,
                                       progress=bar.update, canary=canary)


# Runtimes whose files are opened two at a time before timing starts: compiling an OpenVINO IR is native code
# that releases the GIL (docs/decisions.md). ONNX Runtime sessions open too quickly to gain; a .tflite file's
# kernel choice is timed, so those open one after another.
OPENED_IN_PARALLEL = {"openvino"}


def load_runners(paths: Sequence[Path], threads: int, seed: int) -> list[timing.Runner]:
    """`timing.load_runner` of every path, in order, on two threads (each file its own input generator)."""
    from concurrent.futures import ThreadPoolExecutor

    def load(i: int) -> timing.Runner:
        return timing.load_runner(paths[i], threads, np.random.default_rng([seed, i]))

    with ThreadPoolExecutor(max_workers=max(1, min(2, timing.usable_cores()))) as pool:
        return list(pool.map(load, range(len(paths))))


def measure_file(path: Path, threads: int = 1, *, warmup: int = DEFAULT_WARMUP,
                 repeats: int = 100, rounds: int = 5, seed: int = 0) -> tuple[float, float]:
    """(p50_ms, p95_ms) of one exported model file (.onnx, .tflite, OpenVINO .xml) on this machine."""
    return measure_files([path], threads, warmup=warmup, repeats=repeats, rounds=rounds, seed=seed)[0]


def local_machine(runtime: str) -> dict[str, str]:
    """What a table measured here must match to be used here: CPU model and runtime version."""
    return {"cpu_model": timing.cpu_model(), "runtime_version": timing.runtime_version(runtime)}


# Timing rounds of a latency table on one thread (bench/table_rounds.py: two passes over the same probe files
# agreed as well from 8 rounds as from 15, and fitted as well); on more threads the full DEFAULT_ROUNDS, where
# tables from 5-10 rounds swung 20-27% between two passes and from 15 rounds 5% (docs/decisions.md).
SINGLE_THREAD_TABLE_ROUNDS = 8


def table_rounds(threads: int) -> int:
    return DEFAULT_ROUNDS if threads > 1 else SINGLE_THREAD_TABLE_ROUNDS


# Timed runs per probe and round of a latency table (the pick and the export gate keep their own plan): real
# tables timed with 50 and with 25, alternating, predicted a separate check set alike, the gap between two
# tables of a kind being drift over minutes, not runs (bench/table_repeats.py, docs/decisions.md).
TABLE_REPEATS = 25


def measure_table(profile: TargetProfile, space: SearchSpace, num_classes: int, *, samples: int | None = None,
                  seed: int = 0, progress: bool = True, rounds: int | None = None,
                  repeats: int = TABLE_REPEATS, onnx_cache: Path | None = None) -> LatencyTable:
    """Export the probe models into a temp folder, time them here (`rounds`: table_rounds of the target's
    threads unless given), and fit the table. `onnx_cache`: see targets.probe.export_models."""
    from supernets.arch import ArchConfig
    from targets.probe import DEFAULT_SAMPLES, write_probe_bundle
    from targets.table import Measurement, fit_table

    samples = samples or profile.latency_samples or DEFAULT_SAMPLES[profile.runtime]
    rounds = table_rounds(profile.threads) if rounds is None else rounds
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"probe-{profile.name}-") as tmp:
        bundle = Path(tmp) / "bundle"
        manifest_path = write_probe_bundle(profile, space, num_classes, bundle, samples=samples, seed=seed,
                                           progress=progress, onnx_cache=onnx_cache)
        manifest = json.loads(manifest_path.read_text())
        files = [bundle / m["file"] for m in manifest["models"]]
        timed = measure_files_rounds(files, profile.threads, runtime=profile.runtime, rounds=rounds,
                                     repeats=repeats, seed=seed, progress=progress)
    measurements = [Measurement(ArchConfig.from_dict(m["arch"]), p50, p95, int(m["size_bytes"]))
                    for m, (p50, p95) in zip(manifest["models"], timed.timings, strict=True)]
    method = {"kind": "end-to-end fit", "source": "measure", "samples": samples, "seed": seed,
              "timing": {"warmup": DEFAULT_WARMUP, "repeats": repeats, "rounds": rounds,
                         "method": timing.TIMING_METHOD, **timed.to_dict()},
              "wall_seconds": round(time.perf_counter() - start, 1),
              "description": "sampled sub-networks timed end to end here; per-block entries from a "
                             "non-negative relative-error least-squares fit over per-block features"}
    return fit_table(space, num_classes, profile, measurements, machine=local_machine(profile.runtime),
                     date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), method=method)
