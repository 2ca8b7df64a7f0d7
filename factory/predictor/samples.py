"""Measured sub-networks: which ones to measure (stratified) and the append-only record of measurements.

`predictor_samples.jsonl` in the run holds one JSON line per measured sub-network (accuracy, loss,
images, seconds, and the supernet checkpoint's sha256). Measuring is resumable: a rerun skips what is
recorded for the same checkpoint and validation subset, and a line torn by a kill is ignored. Under
torchrun, rank 0 decides what is left to measure and is the only writer.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exports.progress import progress_bar
from supernets.arch import ArchConfig
from supernets.cost import cost
from supernets.space import SearchSpace

if TYPE_CHECKING:
    from factory.training.distributed import DistContext

SAMPLES_FILE = "predictor_samples.jsonl"


def stratified_archs(space: SearchSpace, n: int, rng: random.Random, num_classes: int = 10,
                     size_bins: int = 3) -> list[ArchConfig]:
    """`n` distinct canonical sub-networks, round-robin over (resolution, MACs bin) cells so every
    resolution and every size range is covered equally. Deterministic for a given `rng` state."""
    # The pool size does not depend on n (up to 500), so a smaller --samples is a prefix of a larger
    # one: a fit can stop early and reuse every measurement.
    pool = list(dict.fromkeys(space.canonical(space.sample(rng)) for _ in range(max(5000, 10 * n))))
    cells: list[list[ArchConfig]] = []
    anchors = space.anchor_resolutions
    nearest = {r: min(anchors, key=lambda a: abs(a - r)) for r in space.resolutions}
    for anchor in anchors:
        members = sorted((a for a in pool if nearest[a.resolution] == anchor),
                         key=lambda a: cost(space, a, num_classes).macs)
        for i in range(size_bins):
            cell = members[i * len(members) // size_bins : (i + 1) * len(members) // size_bins]
            rng.shuffle(cell)
            cells.append(cell)
    out = list(dict.fromkeys([space.canonical(space.largest()), space.canonical(space.smallest())]))
    seen = set(out)
    while len(out) < n and any(cells):
        for cell in cells:
            while cell and cell[-1] in seen:
                cell.pop()
            if cell and len(out) < n:
                out.append(cell.pop())
                seen.add(out[-1])
    return out[:n]


@dataclass(frozen=True)
class Measured:
    """What measuring one sub-network gives: accuracy and mean loss over `images` validation images. A
    screened measurement ran only `evaluated` of them, the hard images of screen `screen` (the others counted
    as right: `factory.predictor.screen`); an exact one carries `correct`, its per-image results (packed).
    `calib`: how many calibration images its BN statistics were recalibrated on (None: the whole split)."""

    accuracy: float
    loss: float  # mean cross-entropy over the images run (all of them, or the `evaluated` hard ones)
    images: int
    evaluated: int | None = None
    screen: str | None = None
    correct: str | None = None
    calib: int | None = None


@dataclass(frozen=True)
class Sample:
    arch: ArchConfig
    accuracy: float
    loss: float
    images: int
    seconds: float
    checkpoint_sha256: str
    evaluated: int | None = None  # see Measured
    screen: str | None = None
    correct: str | None = None
    calib: int | None = None

    @property
    def exact(self) -> bool:
        """Measured on every validation image (not estimated through a screen)."""
        return self.screen is None

    def to_json(self) -> str:
        d = {"arch": self.arch.to_dict(), "accuracy": self.accuracy, "loss": self.loss, "images": self.images,
             "seconds": round(self.seconds, 3), "checkpoint_sha256": self.checkpoint_sha256}
        d.update({k: v for k, v in (("evaluated", self.evaluated), ("screen", self.screen),
                                     ("correct", self.correct), ("calib", self.calib)) if v is not None})
        return json.dumps(d)


ANY_CALIB = "any"


def read_samples(path: Path, space: SearchSpace, checkpoint_sha256: str,
                 images: int | None = None, screen: str | None = None,
                 calib: int | str | None = ANY_CALIB) -> dict[ArchConfig, Sample]:
    """Measured samples of this checkpoint (keyed by canonical arch) on `images` validation images (any
    when None); lines of other checkpoints or validation subsets and a torn last line are skipped. Screened
    samples count only when measured through `screen` (the key of the current hard-image set); with no
    `screen`, only exact measurements are returned. `calib`: only those recalibrated on that many
    calibration images (None: on the whole split), or on any number (ANY_CALIB)."""
    out: dict[ArchConfig, Sample] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
            arch = space.canonical(ArchConfig.from_dict(d["arch"]))
            sample = Sample(arch, float(d["accuracy"]), float(d["loss"]), int(d["images"]), float(d["seconds"]),
                            str(d["checkpoint_sha256"]), _optional(d, "evaluated", int), _optional(d, "screen", str),
                            _optional(d, "correct", str), _optional(d, "calib", int))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if sample.checkpoint_sha256 != checkpoint_sha256 or images not in (None, sample.images):
            continue
        if calib != ANY_CALIB and sample.calib != calib:
            continue
        if sample.exact or (sample.screen == screen and not (arch in out and out[arch].exact)):
            out[arch] = sample  # an exact measurement is never replaced by an estimate
    return out


def _optional(d: dict, key: str, kind: type):
    return None if d.get(key) is None else kind(d[key])


def measure_samples(
    archs: Sequence[ArchConfig],
    measure: Callable[[ArchConfig], Measured],
    path: Path,
    space: SearchSpace,
    checkpoint_sha256: str,
    progress: bool = True,
    images: int | None = None,
    ctx: DistContext | None = None,
    screen: str | None = None,
    desc: str = "measuring sub-networks",
    calib: int | None = None,
) -> list[Sample]:
    """Measure every arch not yet in `path` (append one JSON line each, flushed), return all of `archs`.
    `images`, `screen` and `calib`: which earlier lines count as done (see read_samples).

    With `ctx` (torchrun), `measure` is collective: every rank calls it for the same archs in the same
    order, the ones rank 0 found unmeasured, and only rank 0 writes `path` and shows progress."""
    main = ctx is None or ctx.is_main
    done = read_samples(path, space, checkpoint_sha256, images, screen, calib) if main else {}
    if ctx is not None:
        done = ctx.broadcast_object(done)
    todo = [a for a in archs if a not in done]
    with line_appender(path, enabled=main) as append, \
            progress_bar(total=len(archs), initial=len(archs) - len(todo), enabled=progress and main,
                         desc=desc, unit="net") as bar:
        for sample in measure_each(todo, measure, append, checkpoint_sha256):
            done[sample.arch] = sample
            bar.update(1)
    return [done[a] for a in archs]


def measure_each(archs: Iterable[ArchConfig], measure: Callable[[ArchConfig], Measured],
                 append: Callable[[str], None], checkpoint_sha256: str) -> Iterator[Sample]:
    """Measure `archs` one by one (taken lazily: a caller may hand them out as it goes), append each sample's
    JSON line, yield the samples."""
    for arch in archs:
        t0 = time.perf_counter()
        m = measure(arch)
        sample = Sample(arch, m.accuracy, m.loss, m.images, time.perf_counter() - t0, checkpoint_sha256,
                        m.evaluated, m.screen, m.correct, m.calib)
        append(sample.to_json())
        yield sample


@contextmanager
def line_appender(path: Path, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A function appending one flushed line to `path` (after ending a line torn by a kill); a no-op
    when not `enabled` (ranks other than 0)."""
    if not enabled:
        yield lambda _line: None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as fh:
        if torn:  # an interrupted write: end that line so the next record is not glued to it
            fh.write("\n")

        def append(line: str) -> None:
            fh.write(line + "\n")
            fh.flush()

        yield append
