"""Sub-network measurements split between this process and one helper process, one thread each.

Why: a measurement is a forward pass over small maps (BN recalibration + 1,500 validation images); two
threads in one process run it only ~1.5x faster than one thread, while two one-thread processes on two
cores run two sub-networks in about the time of one (measured on the demo supernet: 48 sub-networks in
13.4 s as two processes against 17.5 s with two threads in one). The prefix-ordered list is handed out
from both ends (`BothEnds`), so each process still shares the first blocks' work between neighbours.

The helper (`python -m factory.predictor.measure_helper JOB`) appends its samples to
`predictor_samples.helper.jsonl` in the run, one flushed line each, and prints one line per sub-network
(the progress bar). Only this process writes `predictor_samples.jsonl`: it moves the helper's lines in
when the helper ends, and also at the start of every measurement, so an interrupted run loses nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from exports.progress import progress_bar
from exports.timing import usable_cores
from factory.data import Split
from factory.predictor.samples import SAMPLES_FILE, Measured, Sample, line_appender, measure_each, read_samples
from factory.predictor.screen import Screen, measurer, record_keys
from factory.run import Run
from supernets import ArchConfig, SearchSpace

if TYPE_CHECKING:
    from factory.predictor.fit import Calibration

HELPER_FILE = "predictor_samples.helper.jsonl"
MIN_SPLIT = 32  # fewer sub-networks than this are not worth starting a second process (~3 s of imports)


def worth_splitting(device: torch.device, world_size: int, todo: int) -> bool:
    """CPU, one process (not torchrun), two cores or more, and enough sub-networks to split."""
    return device.type == "cpu" and world_size == 1 and usable_cores() >= 2 and todo >= MIN_SPLIT


def adopt_helper_samples(run_dir: Path) -> None:
    """Move the helper's finished lines into the samples file (this process is its only writer)."""
    helper, main = run_dir / HELPER_FILE, run_dir / SAMPLES_FILE
    if not helper.exists():
        return
    lines = [line for line in helper.read_text().splitlines() if line.endswith("}")]  # drop a torn last line
    if lines:
        with line_appender(main) as append:
            for line in lines:
                append(line)
        with main.open("rb") as fh:
            os.fsync(fh.fileno())  # on disk before the helper's copy goes
    helper.unlink()


class BothEnds:
    """A prefix-ordered to-do list handed out from both ends: this process takes from the front, the helper is
    fed from the back, until they meet. Neither waits on a cut estimated in advance (by MACs the halves were
    off by several seconds, and the helper starts ~3 s later), and each still walks neighbours that share
    their first blocks."""

    def __init__(self, n: int) -> None:
        self.front, self.back = 0, n
        self._lock = threading.Lock()

    def take_front(self) -> int | None:
        with self._lock:
            if self.front >= self.back:
                return None
            self.front += 1
            return self.front - 1

    def take_back(self) -> int | None:
        with self._lock:
            if self.front >= self.back:
                return None
            self.back -= 1
            return self.back


HELPER_AHEAD = 2  # sub-networks queued in the helper's pipe, so it never waits for the next one


@contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def measure_in_two(run: Run, ordered: Sequence[ArchConfig], todo: Sequence[ArchConfig], val: Split,
                   calib: Calibration, measure: Callable[[ArchConfig], Measured], progress: bool,
                   screen: Screen | None = None, desc: str = "measuring sub-networks") -> list[Sample]:
    """Samples of `ordered` (prefix order); `todo`, the ones not measured yet (in the same order), are shared
    between this process and a helper. `val`: the images measured (the screen's hard ones with a `screen`);
    `calib`: the images BN is recalibrated on."""
    path = run.path / SAMPLES_FILE
    images, key = record_keys(screen, len(val))
    ends = BothEnds(len(todo))
    with tempfile.TemporaryDirectory(prefix="factory-measure-") as tmp, \
            progress_bar(total=len(ordered), initial=len(ordered) - len(todo), enabled=progress,
                         desc=f"{desc} (2 processes)", unit="net") as bar:
        job = Path(tmp) / "job.pt"
        # the images are passed on: the helper need not load (decode) the dataset again
        torch.save({"run": str(run.path), "archs": [a.to_dict() for a in todo],
                    "val": (val.images, val.labels), "calib": (calib.split.images, calib.split.labels),
                    "calib_key": calib.key, "screen": None if screen is None else screen.to_dict()}, job)
        proc = subprocess.Popen([sys.executable, "-m", "factory.predictor.measure_helper", str(job)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        errors: list[str] = []
        follower = threading.Thread(target=_feed_and_follow, args=(proc, ends, bar.update, errors))
        follower.start()
        try:
            def counted(arch: ArchConfig) -> Measured:
                result = measure(arch)
                bar.update(1)
                return result

            def from_the_front() -> Iterator[ArchConfig]:
                while (i := ends.take_front()) is not None:
                    yield todo[i]

            with _one_thread(), line_appender(path) as append:
                for _sample in measure_each(from_the_front(), counted, append, run.checkpoint_sha256):
                    pass
        except BaseException:
            proc.kill()
            raise
        finally:
            follower.join()
            adopt_helper_samples(run.path)
    if errors:
        raise RuntimeError(f"measurement helper process failed: {errors[0]}")
    done = read_samples(path, run.space, run.checkpoint_sha256, images, key, calib.key)
    missing = [a for a in ordered if a not in done]
    if missing:
        raise RuntimeError(f"measurement helper process left {len(missing)} sub-network(s) unmeasured")
    return [done[a] for a in ordered]


def _feed_and_follow(proc: subprocess.Popen, ends: BothEnds, update: Callable[[int], object],
                     errors: list[str]) -> None:
    """Give the helper indices from the back of the list, HELPER_AHEAD at a time, one more for each it reports
    measured; close its input when the ends have met and it has finished what it was given."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    given = 0

    def give() -> bool:
        nonlocal given
        i = ends.take_back()
        if i is None:
            return False
        proc.stdin.write(f"{i}\n")
        proc.stdin.flush()
        given += 1
        return True

    try:
        while given < HELPER_AHEAD and give():
            pass
        if given == 0:
            proc.stdin.close()
        for _line in proc.stdout:
            update(1)
            given -= 1
            if not proc.stdin.closed and not give() and given == 0:
                proc.stdin.close()
    except OSError:  # the helper ended early (its stderr says why); what it was given stays unmeasured
        pass
    err = proc.stderr.read().strip()
    if proc.wait() != 0:
        errors.append(err.splitlines()[-1] if err else f"exit code {proc.returncode}")


def helper_main(job_file: str) -> int:
    """The helper: measure the job's sub-networks on one thread, one line to HELPER_FILE each."""
    from factory.predictor.shared_prefix import SharedPrefixEvaluator
    from factory.run import load_run

    torch.set_num_threads(1)
    job = torch.load(job_file, weights_only=False)
    run = load_run(job["run"])
    val, calib = Split(*job["val"]), Split(*job["calib"])
    screen = None if job.get("screen") is None else Screen.from_dict(job["screen"])
    space: SearchSpace = run.space
    shared = SharedPrefixEvaluator(run.supernet, calib, val, run.mean, run.std, torch.device("cpu"))
    measure_one = measurer(shared, screen, job["calib_key"])

    def measure(arch: ArchConfig) -> Measured:
        m = measure_one(arch)
        print("measured", flush=True)
        return m

    archs = [space.canonical(ArchConfig.from_dict(d)) for d in job["archs"]]

    def given() -> Iterator[ArchConfig]:  # indices into `archs`, one a line, until the parent closes our input
        for line in sys.stdin:
            yield archs[int(line)]

    with line_appender(run.path / HELPER_FILE) as append:
        for _sample in measure_each(given(), measure, append, run.checkpoint_sha256):
            pass
    return 0
