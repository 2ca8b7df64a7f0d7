"""The timing method's contention check (exports.timing.time_interleaved with a canary).

The "models" here are callables that take a known time on a virtual clock that stands in for `time` inside
exports.timing, so the expected figures are exact however loaded the machine running the tests is (real
sleeps of 1 ms overshot by up to 1.8 ms on a busy CI host); the machine state (a host slowing multi-thread
runs) is a counter the callables share. Real runtimes are timed by the latency-table, export-gate and probe
tests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from exports.timing import (
    CONTENTION_RATIO,
    MIN_REPEATS,
    PLAN_CALLS,
    _timed_runs,
    is_contended,
    measure_latency,
    summarize_rounds,
    time_interleaved,
)

WARMUP, REPEATS = 1, 5
FAST_S, SLOW_S = 0.001, 0.003  # a model's run: quiet machine / contended machine


class VirtualClock:
    """What exports.timing reads of `time` (perf_counter_ns, monotonic, sleep), advanced only by the host."""

    def __init__(self) -> None:
        self.ns = 0

    def perf_counter_ns(self) -> int:
        return self.ns

    def monotonic(self) -> float:
        return self.ns / 1e9

    def sleep(self, seconds: float) -> None:
        self.ns += round(seconds * 1e9)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    import exports.timing

    virtual = VirtualClock()
    monkeypatch.setattr(exports.timing, "time", virtual)
    return virtual


class Host:
    """Contended for the first `contended_model_calls` calls of the timed model."""

    def __init__(self, clock: VirtualClock, contended_model_calls: int) -> None:
        self.clock = clock
        self.calls = 0
        self.limit = contended_model_calls

    @property
    def contended(self) -> bool:
        return self.calls < self.limit

    def model(self) -> None:
        slow = self.contended
        self.calls += 1
        self.clock.sleep(SLOW_S if slow else FAST_S)

    def canary_many_threads(self) -> None:  # T threads: quicker than 1 thread unless contended
        self.clock.sleep(SLOW_S if self.contended else 0.8 * FAST_S)

    def canary_one_thread(self) -> None:
        self.clock.sleep(FAST_S)


def test_is_contended_compares_many_threads_with_one(clock):
    quiet, busy = Host(clock, 0), Host(clock, 10**9)
    assert not is_contended((quiet.canary_many_threads, quiet.canary_one_thread), warmup=0, repeats=5)
    assert is_contended((busy.canary_many_threads, busy.canary_one_thread), warmup=0, repeats=5)
    assert SLOW_S / FAST_S > CONTENTION_RATIO > 0.8


class SwingingHost:
    """Every run takes twice as long until `until_s` on the clock (a swing of the whole host), then normal;
    a T-thread run takes 0.8 of a 1-thread run throughout."""

    def __init__(self, clock: VirtualClock, until_s: float) -> None:
        self.clock, self.until_ns = clock, round(until_s * 1e9)

    def _run(self, seconds: float) -> None:
        self.clock.sleep(seconds * (2 if self.clock.ns < self.until_ns else 1))

    def canary_many_threads(self) -> None:
        self._run(0.8 * FAST_S)

    def canary_one_thread(self) -> None:
        self._run(FAST_S)


def test_a_swing_of_the_whole_host_is_not_taken_for_contention(clock):
    """Timed one side after the other, a host that is slow for the first 9 ms would show the T-thread side
    slow (5 x 1.6 ms) and the 1-thread side mostly quick: a ratio of 1.6, over the threshold. In
    alternation both sides see the slow stretch alike (3 pairs of 5)."""
    host = SwingingHost(clock, until_s=0.009)
    assert not is_contended((host.canary_many_threads, host.canary_one_thread), warmup=0, repeats=5)


def test_contended_rounds_are_set_aside_and_more_rounds_timed(clock):
    per_round = WARMUP + REPEATS
    host = Host(clock, contended_model_calls=PLAN_CALLS + 2 * per_round)  # the first two rounds run contended
    timed = time_interleaved([host.model], warmup=WARMUP, repeats=REPEATS, rounds=3, min_clean=2,
                             canary=(host.canary_many_threads, host.canary_one_thread), patience_s=30)
    assert timed.contended_rounds == 2
    assert timed.rounds == 4  # 3 planned, 2 of them contended: one more to reach 2 clean rounds
    assert not timed.contended_counted
    (p50, _p95), = timed.timings
    assert p50 < 1.5 * FAST_S * 1e3  # the clean rounds' figure, not the contended one (3 ms)


def test_rounds_past_the_planned_ones_follow_each_other_quickly(clock):
    """A pick (3 rounds of ~0.1 s) whose rounds came out contended is timed again within a fraction of a second,
    not a second per extra round (the pick of a demo waited 19 s so)."""
    per_round = WARMUP + REPEATS
    host = Host(clock, contended_model_calls=PLAN_CALLS + 3 * per_round)  # every planned round runs contended
    timed = time_interleaved([host.model], warmup=WARMUP, repeats=REPEATS, rounds=3, min_clean=2,
                             canary=(host.canary_many_threads, host.canary_one_thread), patience_s=30)
    assert (timed.rounds, timed.contended_rounds) == (5, 3)
    assert clock.monotonic() < 1.2  # runs and canaries take 0.84 s of it: the two pauses add under 0.4 s


def test_contention_that_never_ends_gives_up_after_patience_and_says_so(clock):
    host = Host(clock, contended_model_calls=10**9)
    start = time.monotonic()
    timed = time_interleaved([host.model], warmup=WARMUP, repeats=REPEATS, rounds=2,
                             canary=(host.canary_many_threads, host.canary_one_thread), patience_s=0.5)
    assert time.monotonic() - start < 10
    assert timed.contended_counted and timed.contended_rounds == timed.rounds >= 2
    (p50, _p95), = timed.timings
    assert p50 > 0.8 * SLOW_S * 1e3  # all rounds used: the figure is the contended one, flagged


class LateHost(Host):
    """Quiet for the first `limit` calls of the timed model, contended from then on, for good."""

    @property
    def contended(self) -> bool:
        return self.calls >= self.limit


def test_a_slowdown_that_outlasts_the_patience_counts_every_round(clock):
    """One clean round, then contention past the patience: the figure is the machine in that state (every
    round pooled, 3 ms) and says so, not the one quiet round's 1 ms."""
    per_round = WARMUP + REPEATS
    host = LateHost(clock, PLAN_CALLS + per_round + 1)  # round 1 clean at both canaries; round 2 on contended
    timed = time_interleaved([host.model], warmup=WARMUP, repeats=REPEATS, rounds=3, min_clean=2,
                             canary=(host.canary_many_threads, host.canary_one_thread), patience_s=0.5)
    assert timed.rounds > 3 and timed.contended_rounds == timed.rounds - 1
    assert timed.contended_counted and timed.to_dict()["contended_counted"] is True
    (p50, _p95), = timed.timings
    assert p50 == pytest.approx(SLOW_S * 1e3)


def test_single_thread_timing_takes_exactly_the_planned_rounds(clock):
    host = Host(clock, 0)
    timed = time_interleaved([host.model, host.model], warmup=WARMUP, repeats=REPEATS, rounds=3)
    assert (timed.rounds, timed.contended_rounds) == (3, 0)
    assert len(timed.timings) == 2


def test_p50_is_the_median_of_all_runs_not_the_best_round(clock):
    host = Host(clock, contended_model_calls=PLAN_CALLS + WARMUP + REPEATS)  # round 1 slow (3 ms), round 2 quick
    timed = time_interleaved([host.model], warmup=WARMUP, repeats=REPEATS, rounds=2)
    (p50, p95), = timed.timings
    # pooled: 5 runs at 3 ms and 5 at 1 ms -> median 2 ms; the lowest round median would say 1 ms
    assert p50 == pytest.approx(2.0)
    assert p95 == pytest.approx(SLOW_S * 1e3)
    assert timed.spreads[0] == pytest.approx(1.0)  # the slow round's median lies 1 ms above the pooled median


def test_summarize_rounds_pools_every_run():
    rounds = [np.array([1.0, 1.0, 1.0, 9.0, 9.0]) * 1e6, np.array([2.0, 2.0, 2.0, 2.0, 2.0]) * 1e6]
    p50, p95, spread = summarize_rounds(rounds)
    pooled = np.concatenate(rounds) / 1e6
    assert p50 == pytest.approx(np.median(pooled)) == pytest.approx(2.0)
    assert p95 == pytest.approx(np.percentile(pooled, 95))
    assert spread == pytest.approx(0.0)  # no round's median lies above the pooled median
    assert summarize_rounds([np.array([3e6] * 3), np.array([1e6] * 3)])[2] == pytest.approx(1.0)


@pytest.mark.parametrize("threads", [1, 2])
def test_measure_latency_times_a_real_onnx_file_once_in_recorded_settings(tmp_path, threads):
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 16, 16), str(path), dynamo=False)
    lat = measure_latency(path, threads, rounds=2, warmup=2, repeats=10)
    assert 0 < lat.p50_ms <= lat.p95_ms * 1.0001 and lat.p50_spread_ms >= 0
    assert lat.rounds - lat.contended_rounds >= 1
    if threads == 1:
        assert lat.rounds == 2  # exactly the planned rounds: nothing is re-timed, whatever the figure
    assert lat.settings["intra_op_num_threads"] == threads and lat.settings["runtime"] == "onnxruntime"
    assert lat.to_dict()["contended_rounds"] == lat.contended_rounds


def test_slow_models_get_fewer_timed_runs_per_round_fast_ones_the_full_plan():
    calls = {"slow": 0, "fast": 0}

    def slow() -> None:  # a 224-px model: 20 ms
        calls["slow"] += 1
        time.sleep(0.020)

    def fast() -> None:  # a 28-px model: 0.5 ms
        calls["fast"] += 1
        time.sleep(0.0005)

    time_interleaved([slow, fast], warmup=10, repeats=50, rounds=2)
    assert calls["slow"] == PLAN_CALLS + 2 * (2 + MIN_REPEATS)  # 60 ms a round: the minimum, 2 warm-up runs
    assert calls["fast"] == PLAN_CALLS + 2 * (10 + 50)


class BurstingHog:
    """CPU hogs pinned to one CPU that run only between `on()` and `off()` (SIGCONT / SIGSTOP), for the first
    `rounds` rounds of a timing (counted by `round_done`, the timing's progress callback); then killed."""

    def __init__(self, cpu: int, processes: int, rounds: int) -> None:
        code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
        self.procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(processes)]
        self.rounds, self.done, self.started, self.running = rounds, 0, False, True
        self.off()

    @property
    def active(self) -> bool:
        return self.started and self.done < self.rounds

    def _signal(self, sig: int, running: bool) -> None:
        if self.running != running and self.procs:
            for p in self.procs:
                os.kill(p.pid, sig)
            self.running = running

    def on(self) -> None:
        if self.active:
            self._signal(signal.SIGCONT, True)

    def off(self) -> None:
        self._signal(signal.SIGSTOP, False)

    def round_done(self, _n: int) -> None:
        self.done += 1
        if not self.active:
            self.kill()

    def kill(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs, self.running = [], False


HOG_ROUNDS = 3
# A run must outlast a scheduler tick (4 ms at 250 Hz, 10 ms at 100 Hz), or runs that start with the CPU
# finish before the hog gets it: half the hog rounds' runs kept their clean time on a fast host at 1.9 ms a run.
RUN_MS = 12.0


def _onnx_lasting(net, path: Path, run_ms: float, rng: np.random.Generator) -> Path:
    """`net` exported at the square input size whose 1-thread ONNX Runtime run takes about `run_ms` on this
    host (its cost grows with the input's area): a fixed size lasts 3x longer on one host than another."""
    import torch

    from exports.runtime import load_session

    side = 64
    for _ in range(2):
        torch.onnx.export(net, torch.zeros(1, 3, side, side), str(path), dynamo=False)
        median_ms = float(np.median(_timed_runs(load_session(path, 1).raw_runner(rng), 1, 10))) / 1e6
        if median_ms >= 0.8 * run_ms:
            break
        side = 8 * int(np.ceil(side * np.sqrt(run_ms / median_ms) / 8))
    return path


@pytest.mark.slow  # ~17 s: real ONNX Runtime runs of ~12 ms, slowed several-fold in the hog rounds
def test_rounds_with_a_cpu_hog_are_set_aside_on_a_real_onnx_runtime_session(tmp_path):
    """Real ONNX Runtime sessions, a real CPU hog pinned to the CPU they run on, the real timing loop.

    On this 2-vCPU VM a free-running hog cannot show the canary anything: ONNX Runtime's pool falls back
    to the calling thread, so 2 threads degrade to ~1 thread, runs shorter than a scheduler slice keep
    their median, longer ones slow alike on both vCPUs, and a 64-px model runs slower on 2 threads than
    on 1 even when the box is quiet. So the hog bursts the way the check exists to catch: during the
    first HOG_ROUNDS rounds it runs while the canary's first side and the model run, and stops while the
    canary's 1-thread side runs; then it is gone. A 1-thread canary pair keeps the quiet ratio at ~1."""
    import torch

    from exports.runtime import load_session

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 48, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(48, 48, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(48, 48, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(48, 10)).eval()
    rng = np.random.default_rng(0)
    path = _onnx_lasting(net, tmp_path / "conv.onnx", RUN_MS, rng)
    model, first, second = (load_session(path, 1).raw_runner(rng) for _ in range(3))
    saved = os.sched_getaffinity(0)
    cpu = min(saved)
    os.sched_setaffinity(0, {cpu})  # this thread (1-thread sessions run on it) and the hog share one CPU
    hog = BurstingHog(cpu, processes=4, rounds=HOG_ROUNDS)
    hog_round_ms: list[float] = []

    def model_run() -> None:
        hogged = hog.active
        hog.on()
        start = time.perf_counter()
        model()
        if hogged:
            hog_round_ms.append((time.perf_counter() - start) * 1e3)

    def canary_first() -> None:
        hog.started = True
        hog.on()
        first()

    def canary_second() -> None:
        hog.off()
        second()

    try:
        timed = time_interleaved([model_run], warmup=2, repeats=10, rounds=HOG_ROUNDS + 1, min_clean=2,
                                 canary=(canary_first, canary_second), progress=hog.round_done, patience_s=120)
    finally:
        hog.kill()
        os.sched_setaffinity(0, saved)
    assert timed.contended_rounds >= HOG_ROUNDS, timed  # every hog round was seen and set aside
    assert not timed.contended_counted and timed.rounds - timed.contended_rounds >= 2, timed  # clean rounds instead
    (p50, p95), = timed.timings
    hog_ms = float(np.median(hog_round_ms))  # ~5x the clean rounds' runs here (62 vs 13 ms)
    assert p50 < 0.5 * hog_ms and p95 < 0.9 * hog_ms, (p50, p95, hog_ms)  # no hog-round run among the figures
