"""Accuracy with its 95% interval, and paired comparisons that call a difference inside the noise a tie.

A single accuracy is a binomial proportion: the Wilson score interval (honest at 0 and 100 %, unlike the
normal approximation). Two models scored on the same images are compared on the per-image difference
(paired bootstrap, seeded), which is far tighter than comparing their separate intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 4000


@dataclass(frozen=True)
class AccuracyEstimate:
    """`correct` of `images` right, with the 95% Wilson interval [low, high]."""

    correct: int
    images: int
    split: str = "test"

    @property
    def value(self) -> float:
        return self.correct / self.images if self.images else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.images)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {"split": self.split, "value": self.value, "ci95": [low, high], "correct": self.correct,
                "images": self.images, "interval": "Wilson score, 95%"}

    def __str__(self) -> str:
        low, high = self.interval
        return f"{self.value:.2%} [{low:.2%}, {high:.2%}] ({self.split}, {self.images} images)"

    @classmethod
    def of(cls, hits: np.ndarray, split: str = "test") -> AccuracyEstimate:
        """From a per-image 0/1 (or bool) array."""
        hits = np.asarray(hits)
        return cls(int(hits.sum()), int(hits.size), split)


def estimate_text(record: dict[str, Any] | None, missing: str = "-") -> str:
    """An `AccuracyEstimate.to_dict()` record as people read it: "97.29% [95.8, 98.3]" (percent, 95% interval)."""
    if not record:
        return missing
    low, high = record["ci95"]
    return f"{100 * record['value']:.2f}% [{100 * low:.1f}, {100 * high:.1f}]"


def wilson_interval(correct: int, images: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (nan, nan) for 0 images."""
    if images <= 0:
        return float("nan"), float("nan")
    p = correct / images
    denom = 1 + z * z / images
    centre = (p + z * z / (2 * images)) / denom
    half = z * math.sqrt(p * (1 - p) / images + z * z / (4 * images * images)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairedDifference:
    """accuracy(a) - accuracy(b) on the same images, with its 95% paired-bootstrap interval."""

    difference: float
    low: float
    high: float
    images: int

    @property
    def verdict(self) -> str:
        """"a better" / "b better" only when the interval excludes 0; otherwise "tie"."""
        if self.low > 0:
            return "a better"
        if self.high < 0:
            return "b better"
        return "tie"

    def to_dict(self) -> dict[str, Any]:
        return {"difference": self.difference, "ci95": [self.low, self.high], "images": self.images,
                "verdict": self.verdict, "interval": f"paired bootstrap, {BOOTSTRAP_RESAMPLES} resamples, 95%"}


def paired_difference(hits_a: np.ndarray, hits_b: np.ndarray, seed: int = 0) -> PairedDifference:
    """Paired bootstrap of the accuracy difference of two models' per-image hits on the same images."""
    a, b = np.asarray(hits_a, dtype=np.float64), np.asarray(hits_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"paired_difference: need two equal-length 1-D hit arrays, got {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(BOOTSTRAP_RESAMPLES)
    for start in range(0, BOOTSTRAP_RESAMPLES, 500):  # chunks keep memory flat on large test splits
        stop = min(BOOTSTRAP_RESAMPLES, start + 500)
        idx = rng.integers(0, d.size, size=(stop - start, d.size))
        means[start:stop] = d[idx].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return PairedDifference(float(d.mean()), float(low), float(high), int(d.size))
