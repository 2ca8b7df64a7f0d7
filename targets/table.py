"""The per-block latency table of one target, fitted from end-to-end measurements, and its JSON.

Why fitted end to end rather than timed block by block: the default models run in 0.1-1 ms, so the
per-call overhead of a runtime (tens of microseconds) is as large as a block, and a block timed alone
runs with a cold, different memory layout. Timing 32-48 whole sampled sub-networks (48 for ONNX
Runtime; 40 / 32 for OpenVINO / TFLite, whose conversions cost more)
and fitting a non-negative linear model over per-block features (`targets.blocks`) gives per-block
entries that include how blocks behave inside a network, keeps the conversions affordable (360
single-block TFLite models would not fit in 3 minutes), and the same probe models serve a remote
device. The table is still a lookup table: entry (stage, first, kernel, expand, resolution) is the
fitted latency of that block; `fixed[resolution]` holds stem + first block + head + call overhead.
The fit minimises relative error (rows weighted by 1/latency). Fit quality (5-fold cross-validated
share within +-10%, Spearman rho, mean abs. relative error) is saved with the table; the held-out
figures come from bench/latency_accuracy.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from exports.files import atomic_write_text
from supernets.arch import ArchConfig
from supernets.space import SearchSpace
from targets.blocks import (
    SIZE_FEATURES,
    BlockKey,
    block_shapes,
    latency_block_features,
    latency_design,
    latency_feature_names,
    latency_fixed_features,
    size_design,
)

TABLE_SCHEMA = 1


class LatencyTableError(ValueError):
    """A table that is missing, corrupt, or measured under settings other than the ones asked for."""


@dataclass(frozen=True)
class Measurement:
    """One timed sub-network: the raw data a table is fitted from (kept in the JSON for audit)."""

    arch: ArchConfig
    p50_ms: float
    p95_ms: float
    size_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "p50_ms": self.p50_ms, "p95_ms": self.p95_ms,
                "size_bytes": self.size_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        return cls(ArchConfig.from_dict(d["arch"]), float(d["p50_ms"]), float(d["p95_ms"]), int(d["size_bytes"]))


@dataclass(frozen=True)
class LatencyTable:
    """Settings it was measured under + per-block entries (ms) + size model coefficients (bytes)."""

    target: str
    settings: dict[str, Any]  # runtime, format, precision, threads, batch
    space: dict[str, Any]  # name, phi, resolutions
    num_classes: int
    machine: dict[str, Any]  # cpu_model, runtime_version, ... of the device that ran the models
    date: str
    method: dict[str, Any]
    fit: dict[str, Any]
    blocks: dict[BlockKey, tuple[float, float]]  # key -> (p50_ms, p95_ms)
    fixed: dict[int, tuple[float, float]]  # resolution -> (p50_ms, p95_ms)
    size_coef: tuple[float, ...]  # bytes per SIZE_FEATURES
    measurements: list[Measurement] = field(default_factory=list)

    # ----- JSON ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": TABLE_SCHEMA,
            "target": self.target,
            "settings": self.settings,
            "space": self.space,
            "num_classes": self.num_classes,
            "machine": self.machine,
            "date": self.date,
            "method": self.method,
            "fit": self.fit,
            "fixed": [{"resolution": r, "p50_ms": v[0], "p95_ms": v[1]} for r, v in sorted(self.fixed.items())],
            "blocks": [{"stage": k[0], "first": k[1], "kernel": k[2], "expand": k[3], "resolution": k[4],
                        "p50_ms": v[0], "p95_ms": v[1]} for k, v in sorted(self.blocks.items())],
            "size_model": {"features": list(SIZE_FEATURES), "bytes_per_feature": list(self.size_coef)},
            "measurements": [m.to_dict() for m in self.measurements],
        }

    def save(self, path: Path) -> Path:
        """Write atomically (temp file + rename): a crash never leaves half a table."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyTable:
        if d.get("schema") != TABLE_SCHEMA:
            raise LatencyTableError(f"schema: {d.get('schema')!r} is not supported; expected {TABLE_SCHEMA}")
        return cls(
            target=d["target"], settings=d["settings"], space=d["space"], num_classes=int(d["num_classes"]),
            machine=d["machine"], date=d["date"], method=d["method"], fit=d["fit"],
            blocks={(int(b["stage"]), bool(b["first"]), int(b["kernel"]), int(b["expand"]), int(b["resolution"])):
                    (float(b["p50_ms"]), float(b["p95_ms"])) for b in d["blocks"]},
            fixed={int(f["resolution"]): (float(f["p50_ms"]), float(f["p95_ms"])) for f in d["fixed"]},
            size_coef=tuple(float(c) for c in d["size_model"]["bytes_per_feature"]),
            measurements=[Measurement.from_dict(m) for m in d.get("measurements", [])],
        )

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return cls.from_dict(data)
        except FileNotFoundError:
            raise LatencyTableError(f"{path}: no latency table") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise LatencyTableError(f"{path}: not a valid latency table ({type(exc).__name__}: {exc})") from None


# ----- settings ----------------------------------------------------------------------------------------
def space_settings(space: SearchSpace) -> dict[str, Any]:
    return {"name": space.name, "phi": space.spec.phi, "width": space.spec.width,
            "resolutions": list(space.resolutions)}


def recorded_space_value(recorded: dict[str, Any], key: str) -> Any:
    """A space setting as a table or bundle recorded it; those written before the width multiplier existed
    were all width 1.0."""
    return recorded.get(key, 1.0 if key == "width" else None)


def profile_settings(profile: Any) -> dict[str, Any]:
    return {"runtime": profile.runtime, "format": profile.format, "precision": profile.precision,
            "threads": profile.threads, "batch": profile.batch}


def settings_differences(table: LatencyTable, profile: Any, space: SearchSpace | None = None,
                         num_classes: int | None = None, machine: dict[str, Any] | None = None) -> list[str]:
    """Human-readable differences between what the table was measured under and what is asked."""
    diffs = []
    want = profile_settings(profile)
    for key, value in want.items():
        if table.settings.get(key) != value:
            diffs.append(f"{key}: table has {table.settings.get(key)!r}, target {profile.name!r} wants {value!r}")
    if space is not None:
        for key, value in space_settings(space).items():
            if recorded_space_value(table.space, key) != value:
                diffs.append(f"space.{key}: table has {recorded_space_value(table.space, key)!r}, "
                             f"the run has {value!r}")
    if num_classes is not None and table.num_classes != num_classes:
        diffs.append(f"num_classes: table has {table.num_classes}, the run has {num_classes}")
    for key, value in (machine or {}).items():
        if table.machine.get(key) != value:
            diffs.append(f"{key}: table measured on {table.machine.get(key)!r}, this machine has {value!r}")
    return diffs


# ----- fitting -----------------------------------------------------------------------------------------
def fit_nonnegative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on column-scaled features (no block can cost negative time)."""
    from scipy.optimize import nnls

    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    w, _ = nnls(x / scale, y, maxiter=50 * x.shape[1])
    return w / scale


def _fit_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Minimise relative (not absolute) error: rows weighted by 1/y, so small nets count as much as large."""
    return fit_nonnegative(x / y[:, None], np.ones_like(y))


def accuracy_stats(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Share within +-10%, Spearman rank correlation, mean and max absolute relative error."""
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = np.abs(p - m) / m
    rho = float(spearmanr(p, m).statistic) if len(p) > 2 else float("nan")
    return {"n": len(p), "within_10pct": float(np.mean(rel <= 0.10)), "spearman": rho,
            "mean_abs_rel_error": float(rel.mean()), "max_abs_rel_error": float(rel.max())}


def cross_validate(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """K-fold predictions of the relative-error NNLS fit, scored against the held-out measurements."""
    idx = list(range(len(y)))
    random.Random(seed).shuffle(idx)
    pred = np.empty_like(y)
    for f in range(folds):
        test = idx[f::folds]
        train = sorted(set(idx) - set(test))
        w = _fit_relative(x[train], y[train])
        pred[test] = x[test] @ w
    return accuracy_stats(pred, y)


def fit_table(space: SearchSpace, num_classes: int, profile: Any, measurements: Sequence[Measurement], *,
              machine: dict[str, Any], date: str, method: dict[str, Any]) -> LatencyTable:
    """Fit per-block p50 and p95 entries and the size model from timed sub-networks."""
    if len(measurements) < 20:
        raise LatencyTableError(f"measurements: {len(measurements)} timed sub-networks are too few to fit "
                                f"{len(latency_feature_names(space))} coefficients; need >= 20")
    x = np.stack([latency_design(space, m.arch) for m in measurements])
    p50 = np.array([m.p50_ms for m in measurements])
    p95 = np.array([m.p95_ms for m in measurements])
    w50, w95 = _fit_relative(x, p50), _fit_relative(x, p95)
    blocks = {key: (float(latency_block_features(space, key) @ w50), float(latency_block_features(space, key) @ w95))
              for key in block_shapes(space)}
    fixed = {r: (float(latency_fixed_features(space, r) @ w50), float(latency_fixed_features(space, r) @ w95))
             for r in space.resolutions}
    xs = np.stack([size_design(space, m.arch) for m in measurements])
    sizes = np.array([m.size_bytes for m in measurements], float)
    size_coef, *_ = np.linalg.lstsq(xs / sizes[:, None], np.ones_like(sizes), rcond=None)
    fit = {
        "p50_train": accuracy_stats(x @ w50, p50),
        "p50_cv5": cross_validate(x, p50),
        "p95_cv5": cross_validate(x, p95),
        "size_train": accuracy_stats(xs @ size_coef, sizes),
        "coefficients_p50": dict(zip(latency_feature_names(space), map(float, w50), strict=True)),
        "measured_p50_range_ms": [float(p50.min()), float(p50.max())],
    }
    return LatencyTable(
        target=profile.name, settings=profile_settings(profile), space=space_settings(space),
        num_classes=num_classes, machine=machine, date=date, method=method, fit=fit,
        blocks=blocks, fixed=fixed, size_coef=tuple(float(c) for c in size_coef),
        measurements=list(measurements),
    )
