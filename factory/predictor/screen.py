"""Measuring most sub-networks only on the validation images that sub-networks disagree on.

Why: every sub-network of a trained supernet classifies most validation images right (on the demo supernet
61% of the 1,500 images were right for all of 650 sub-networks measured, 76% for the 60 of a screen). Such an
image adds the same count to every accuracy, so it does not change a ranking, yet costs as much to run as any
other. The predictor therefore measures some sub-networks exactly (the held-out ones, which score it, and the
uniformly scaled ones, which the search and the report use as measured figures), takes the images at least
one of those got wrong as the *hard* images, and measures the other sub-networks on the hard images only,
counting the rest as right: accuracy = (easy images + right among the hard ones) / all images. The estimate
can only be too high (an easy image a sub-network gets wrong is missed); the bench of docs/decisions.md
(2026-12-01, fourth session) measured what that does to the predictor's ranking.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from factory.data import Split
from factory.evaluate import EvalResult
from factory.predictor.samples import Measured, Sample
from supernets import ArchConfig

# Exact measurements a screen is made of, at least: with 20 random sub-networks the screened accuracies
# ranked like the exact ones with Spearman 0.968, with 60 0.994 (docs/decisions.md).
SCREEN_MIN = 60


def pack_correct(correct: torch.Tensor | np.ndarray) -> str:
    """Per-image right/wrong as text for a JSON line: base64 of the packed bits (1,500 images: 252 chars)."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool))).decode("ascii")


def unpack_correct(text: str, images: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    if len(bits) < images:
        raise ValueError(f"per-image results hold {len(bits)} images, expected {images}")
    return bits[:images].astype(bool)


@dataclass(frozen=True)
class Screen:
    """The hard images (indices into the validation split of `total` images) and how many exact
    measurements found them."""

    hard: tuple[int, ...]
    total: int
    exact: int

    @property
    def easy(self) -> int:
        return self.total - len(self.hard)

    @property
    def key(self) -> str:
        """Names this set of hard images in the samples file: estimates made through another screen (other
        exact sub-networks, another validation subset) are not mixed with this one's."""
        text = f"{self.total}:" + ",".join(map(str, self.hard))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_samples(cls, samples: Sequence[Sample], total: int) -> Screen:
        """The images any of `samples` (exact, with per-image results) got wrong."""
        wrong = np.zeros(total, dtype=bool)
        used = 0
        for s in samples:
            if s.correct is not None and s.images == total:
                wrong |= ~unpack_correct(s.correct, total)
                used += 1
        return cls(tuple(int(i) for i in np.flatnonzero(wrong)), total, used)

    def split(self, val: Split) -> Split:
        """The hard images of `val` (the split the screen was made on), in split order."""
        idx = torch.tensor(self.hard, dtype=torch.long)
        return Split(val.images[idx], val.labels[idx])

    def to_dict(self) -> dict:
        return {"hard": list(self.hard), "total": self.total, "exact": self.exact}

    @classmethod
    def from_dict(cls, d: dict) -> Screen:
        return cls(tuple(int(i) for i in d["hard"]), int(d["total"]), int(d["exact"]))


def record_keys(screen: Screen | None, measured_images: int) -> tuple[int, str | None]:
    """(validation images a sample's accuracy is over, its screen key) for measurements run on
    `measured_images` images: all of them without a screen, the screen's hard ones with it."""
    return (measured_images, None) if screen is None else (screen.total, screen.key)


def exact_archs(archs: Sequence[ArchConfig], held: Sequence[ArchConfig], grid: Sequence[ArchConfig],
                minimum: int = SCREEN_MIN) -> list[ArchConfig]:
    """Which sub-networks are measured on every image: the held-out ones and the uniform grid, topped up
    with the first of `archs` (stratified order: spread over resolutions and sizes) to `minimum`."""
    out = list(dict.fromkeys([*held, *grid]))
    chosen = set(out)
    for a in archs:
        if len(out) >= minimum:
            break
        if a not in chosen:
            out.append(a)
            chosen.add(a)
    return out


def measurer(evaluate: Callable[[ArchConfig], EvalResult], screen: Screen | None,
             calib: int | None = None) -> Callable[[ArchConfig], Measured]:
    """The measurement of one sub-network. `evaluate` runs it on the images to measure: all of the validation
    split (no `screen`: the result keeps its per-image outcomes), or the screen's hard images; `calib`: how
    many calibration images it recalibrates BN on (None: the whole split), recorded with the figures."""

    def exact(arch: ArchConfig) -> Measured:
        r = evaluate(arch)
        return Measured(r.accuracy, r.loss, r.images, correct=None if r.correct is None else pack_correct(r.correct),
                        calib=calib)

    def screened(arch: ArchConfig) -> Measured:
        assert screen is not None
        if not screen.hard:  # every image right for every exact sub-network: nothing left to tell apart
            return Measured(1.0, 0.0, screen.total, evaluated=0, screen=screen.key, calib=calib)
        r = evaluate(arch)
        right = round(r.accuracy * r.images)
        return Measured((screen.easy + right) / screen.total, r.loss, screen.total, evaluated=r.images,
                        screen=screen.key, calib=calib)

    return exact if screen is None else screened
