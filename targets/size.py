"""Exported file size: measured from a written model, predicted from a config.

The prediction is linear in what the file stores (`targets.blocks.SIZE_FEATURES`): weights (times
the bytes of the precision), per-channel entries (biases, quantization scales), per-layer overhead
(names, shapes, node records) and a constant (stem, first block, head, graph header). Its
coefficients are fitted per target on the exported probe models, so format details (fp16 casts,
int8 zero points, OpenVINO's XML) are measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from supernets.arch import ArchConfig
from supernets.space import SearchSpace
from targets.blocks import size_design

BYTES_PER_MB = 1_000_000


def exported_size_bytes(path: Path) -> int:
    """Bytes of an exported model: the file itself, plus model.bin next to an OpenVINO model.xml."""
    path = Path(path)
    total = path.stat().st_size
    if path.suffix == ".xml":
        weights = path.with_suffix(".bin")
        if weights.exists():
            total += weights.stat().st_size
    return total


def predict_size_bytes(space: SearchSpace, arch: ArchConfig, coef: Sequence[float]) -> float:
    """Predicted exported size in bytes from the fitted per-feature byte costs."""
    return float(size_design(space, arch) @ np.asarray(coef, float))
