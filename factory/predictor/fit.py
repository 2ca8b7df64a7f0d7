"""`factory predictor fit`: sample sub-networks, measure them, fit the predictor, store it in the run.

Sub-networks are sampled stratified over resolution and size (`samples.stratified_archs`), measured with
`factory.evaluate` (BN recalibrated, validation split; resumable through `predictor_samples.jsonl`),
and all but `holdout` of them fit gradient-boosted regression trees (`fit_trees`). `predictor.pt` records the
held-out Spearman rank correlation of the stored model itself (not of a refit). Under torchrun each
sub-network's validation images are split across the ranks (same figures as one process); rank 0
alone writes the samples and fits.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from factory.data import Split
from factory.errors import UserInputError
from factory.evaluate import on_device
from factory.predictor.features import predictor_features
from factory.predictor.model import PREDICTOR_FILE, AccuracyPredictor
from factory.predictor.samples import SAMPLES_FILE, Sample, measure_samples, read_samples, stratified_archs
from factory.predictor.screen import SCREEN_MIN, Screen, exact_archs, measurer, record_keys
from factory.run import Run, load_run
from factory.training.distributed import DistContext
from supernets.arch import ArchConfig
from supernets.cost import cost
from supernets.space import SearchSpace


@dataclass(frozen=True)
class FitConfig:
    """Stochastic gradient boosting (squared error) of depth-limited regression trees. Common defaults,
    not tuned per run: bench/predictor_quality.py found them within noise of deeper, shallower, slower and
    faster settings (docs/decisions.md has the comparison)."""

    trees: int = 400
    learning_rate: float = 0.03
    depth: int = 3
    subsample: float = 0.8  # share of the training samples each tree sees (drawn per tree)
    min_leaf: int = 5  # fewest samples of a tree's subsample in a leaf


def fit_trees(
    space: SearchSpace,
    archs: Sequence[ArchConfig],
    targets: Sequence[float],
    seed: int = 0,
    config: FitConfig = FitConfig(),
    num_classes: int = 10,
) -> AccuracyPredictor:
    """Boosted trees on `predictor_features` of `archs`, fitted to the standardised `targets`; the
    subsamples come from `seed`, so a fit is reproducible."""
    if len(archs) < 4:
        raise UserInputError(f"predictor: need at least 4 measured sub-networks to fit, got {len(archs)}")
    if len(archs) != len(targets):
        raise ValueError(f"fit_trees: {len(archs)} archs but {len(targets)} targets")
    y = np.asarray(targets, dtype=np.float64)
    mean = float(y.mean())
    std = float(y.std()) if float(y.std()) > 1e-8 else 1.0
    feature, threshold, leaf = boost(predictor_features(space, archs, num_classes), (y - mean) / std, config,
                                     np.random.default_rng(seed))
    return AccuracyPredictor(space, feature, threshold, leaf, mean, std, num_classes)


@dataclass(frozen=True)
class _Bins:
    """Every feature's distinct values as one flat run of bins (feature by feature, ascending): a split
    after bin b sends values <= bin b left."""

    index: np.ndarray  # (N, F) the bin of each sample's value
    feature: np.ndarray  # (B,) the feature of each bin
    start: np.ndarray  # (B,) the first bin of that feature
    last: np.ndarray  # (B,) bool: last bin of its feature (no split after it)
    threshold: np.ndarray  # (B,) float32: between this bin's value and the next one's

    @classmethod
    def of(cls, x: np.ndarray) -> _Bins:
        values = [np.unique(x[:, f]) for f in range(x.shape[1])]
        sizes = np.array([len(v) for v in values])
        offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        index = np.stack([np.searchsorted(v, x[:, f]) for f, v in enumerate(values)], axis=1) + offset[None, :]
        flat = np.concatenate(values)
        last = np.zeros(len(flat), dtype=bool)
        last[offset + sizes - 1] = True
        nxt = np.append(flat[1:], np.float32(np.inf))
        mid = ((flat.astype(np.float64) + nxt) / 2).astype(np.float32)
        mid = np.where(mid >= nxt, flat, mid)  # neighbours one float32 step apart: the lower value splits too
        return cls(index, np.repeat(np.arange(x.shape[1]), sizes), np.repeat(offset, sizes), last, mid)


def boost(x: np.ndarray, y: np.ndarray, config: FitConfig,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(feature, threshold, leaf) arrays of `AccuracyPredictor` for targets `y`: each tree is grown level
    by level on a fresh subsample, every node taking the split (over all features and thresholds) that
    most reduces the squared error, if any leaves `min_leaf` samples on both sides."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x)
    bins = _Bins.of(x)
    inner, leaves = 2**config.depth - 1, 2**config.depth
    feature = np.zeros((config.trees, inner), dtype=np.int32)
    threshold = np.full((config.trees, inner), np.inf, dtype=np.float32)
    leaf = np.zeros((config.trees, leaves), dtype=np.float32)
    resid = np.asarray(y, dtype=np.float64).copy()
    n_sub = min(n, max(1, round(config.subsample * n)))
    rows = np.arange(n)
    for t in range(config.trees):
        sub = np.sort(rng.choice(n, n_sub, replace=False))
        index = bins.index[sub]
        node = np.zeros(n, dtype=np.int64)
        for level in range(config.depth):
            first = 2**level - 1
            split_feature, split_threshold = _level_splits(bins, index, node[sub] - first, resid[sub], 2**level,
                                                           config.min_leaf)
            feature[t, first:2 * first + 1] = split_feature
            threshold[t, first:2 * first + 1] = split_threshold
            node = 2 * node + 1 + (x[rows, feature[t, node]] > threshold[t, node])
        at = node[sub] - inner
        sums = np.bincount(at, resid[sub], leaves)
        counts = np.bincount(at, minlength=leaves)
        leaf[t] = config.learning_rate * np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        resid -= leaf[t, node - inner]
    return feature, threshold, leaf


def _level_splits(bins: _Bins, index: np.ndarray, local: np.ndarray, r: np.ndarray, nodes: int,
                  min_leaf: int) -> tuple[np.ndarray, np.ndarray]:
    """Best split per node of one tree level, from per-(node, bin) counts and residual sums of the
    subsample (`index` its bins, `local` its node at this level, `r` its residuals); (0, +inf) for a node
    that cannot split (too few samples, or no split lowers the error)."""
    n_bins = len(bins.feature)
    key = (local[:, None] * n_bins + index).ravel()
    counts = np.bincount(key, minlength=nodes * n_bins).reshape(nodes, n_bins)
    sums = np.bincount(key, np.repeat(r, index.shape[1]), minlength=nodes * n_bins).reshape(nodes, n_bins)
    pad = np.zeros((nodes, 1))
    c_counts = np.concatenate([pad, np.cumsum(counts, axis=1)], axis=1)
    c_sums = np.concatenate([pad, np.cumsum(sums, axis=1)], axis=1)
    left_n = c_counts[:, 1:] - c_counts[:, bins.start]  # samples of the node at or below each bin
    left_s = c_sums[:, 1:] - c_sums[:, bins.start]
    total_n = np.bincount(local, minlength=nodes).astype(np.float64)[:, None]
    total_s = np.bincount(local, r, minlength=nodes)[:, None]
    right_n = total_n - left_n
    ok = ~bins.last[None, :] & (left_n >= min_leaf) & (right_n >= min_leaf)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(ok, left_s**2 / left_n + (total_s - left_s) ** 2 / right_n, -np.inf)
        unsplit = np.where(total_n > 0, total_s**2 / total_n, 0.0)[:, 0]
    best = np.argmax(score, axis=1)
    split = score[np.arange(nodes), best] > unsplit + 1e-12
    return (np.where(split, bins.feature[best], 0).astype(np.int32),
            np.where(split, bins.threshold[best], np.inf).astype(np.float32))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    return float(spearmanr(a, b).statistic)


@dataclass(frozen=True)
class FitReport:
    path: Path
    samples: int
    train: int
    holdout: int
    holdout_spearman: float
    macs_spearman: float  # the baseline: rank correlation of MACs alone with measured accuracy
    holdout_mae: float
    accuracy_range: tuple[float, float]
    measure_seconds: float
    fit_seconds: float
    val_images: int
    uniform: int = 0  # uniformly scaled sub-networks measured too (training set only, never held out)
    screen: Screen | None = None  # the hard images the screened measurements ran on (None: all exact)
    screened: int = 0  # training samples measured through the screen
    calib_images: int = 0  # calibration images each measurement recalibrated BN on

    def to_dict(self) -> dict[str, Any]:
        screen = None if self.screen is None else {"exact": self.screen.exact, "screened": self.screened,
                                                   "hard_images": len(self.screen.hard), "key": self.screen.key}
        return {"predictor": str(self.path), "samples": self.samples, "train": self.train, "holdout": self.holdout,
                "holdout_spearman": round(self.holdout_spearman, 4), "macs_spearman": round(self.macs_spearman, 4),
                "holdout_mae": round(self.holdout_mae, 5), "accuracy_range": list(self.accuracy_range),
                "measure_seconds": round(self.measure_seconds, 1), "fit_seconds": round(self.fit_seconds, 1),
                "val_images": self.val_images, "calib_images": self.calib_images, "uniform": self.uniform,
                "screened": self.screened, "screen": screen}


def split_holdout(n: int, holdout: int) -> tuple[list[int], list[int]]:
    """Evenly spaced held-out indices: samples come in round-robin cell order, so this is stratified."""
    if holdout >= n:
        raise UserInputError(f"--holdout: {holdout} must be smaller than --samples ({n})")
    step = n / holdout
    held = sorted({int(i * step + step / 2) for i in range(holdout)})
    train = [i for i in range(n) if i not in set(held)]
    return train, held


# Measured sub-networks when none is asked for, per space: a 28-px network measures in ~0.3 s, a 224-px
# one in ~3 s on 2 CPU cores (100 + 100 images), so the ImageNet-class space gets fewer by default
# (pass --samples to trade time for ranking; on a GPU, run it under torchrun with more).
DEFAULT_SAMPLES = {"small": 400, "ofa_mbv3": 100}


def default_samples(space_name: str) -> int:
    return DEFAULT_SAMPLES.get(space_name, 400)


def default_holdout(samples: int) -> int:
    """A quarter of the samples scores the predictor (10 to 50)."""
    return min(50, max(10, samples // 4))


def fit_predictor(
    run_dir: str | Path,
    samples: int | None = None,
    holdout: int | None = None,
    seed: int = 0,
    val_images: int | None = None,
    progress: bool = True,
    config: FitConfig = FitConfig(),
    uniform: bool = True,
    device: str = "auto",
    screen: bool = True,
    calib_images: int | None = None,
) -> FitReport:
    """`factory predictor fit`: sample, measure (resumable), fit, store predictor.pt in the run.

    Each measurement recalibrates BN on `calib_images` images of the calibration split (a fixed class-stratified
    subset, the same for every sub-network; None: all of them, the default: on the demo supernet 150 of 300 saved
    6-23% and one subset ranked clearly worse, docs/decisions.md 2026-12-02). The search's verified pick and the
    package recalibrate on the whole split whatever this is.

    With `uniform`, the space's uniformly scaled sub-networks are measured too and join the training
    set (the held-out set stays random, stratified sub-networks): the search's verification then
    knows their real accuracy, so a pick can never lose to a hand-scaled network that was measured.
    With `screen` (one process), the training sub-networks other than those are measured on the hard
    images only (`factory.predictor.screen`); the held-out and uniform ones always on every image.
    Under torchrun every rank measures (on its local device) and returns rank 0's report."""
    run = load_run(run_dir)
    samples = default_samples(run.space.name) if samples is None else samples
    holdout = default_holdout(samples) if holdout is None else holdout
    if samples < holdout + 10:
        raise UserInputError(f"--samples: {samples} leaves fewer than 10 training samples after "
                             f"{holdout} held out; use at least {holdout + 10}")
    ctx = DistContext.from_env(device)
    try:
        archs = stratified_archs(run.space, samples, random.Random(seed), run.num_classes)
        _, held_idx = split_holdout(len(archs), holdout)
        ds = run.dataset()
        val = ds.val if val_images is None or val_images >= len(ds.val) else _subset(ds.val, val_images, seed)
        calib = Calibration.of(ds.calib, calib_images, seed)
        t0 = time.perf_counter()
        with on_device(run.supernet, ctx.device):
            measured, extra, used = _measure(run, archs, [archs[i] for i in held_idx], val, calib, uniform,
                                             screen and ctx.world_size == 1, progress, ctx)
        seconds = time.perf_counter() - t0
        report = _fit_and_store(run, measured, extra, holdout, seed, config, seconds, len(val), used,
                                len(calib.split)) if ctx.is_main else None
        return ctx.broadcast_object(report)
    finally:
        ctx.close()


def _fit_and_store(run: Run, measured: list[Sample], extra: list[Sample], holdout: int, seed: int,
                   config: FitConfig, measure_seconds: float, val_images: int, screen: Screen | None,
                   calib_images: int) -> FitReport:
    """Fit on all but `holdout` of `measured` (+ `extra`), score on the held-out ones, write predictor.pt."""
    t1 = time.perf_counter()
    train_idx, held_idx = split_holdout(len(measured), holdout)
    tr = [measured[i] for i in train_idx] + extra
    ho = [measured[i] for i in held_idx]
    if not all(s.exact for s in ho):
        raise RuntimeError("held-out sub-networks must be measured on every validation image")
    model = fit_trees(run.space, [s.arch for s in tr], [s.accuracy for s in tr], seed, config, run.num_classes)
    figures = _holdout_figures(model, ho, run.num_classes)
    t2 = time.perf_counter()
    screened = sum(not s.exact for s in tr)
    meta = {**figures, "train": len(tr), "holdout": len(ho), "seed": seed, "val_images": val_images,
            "calib_images": calib_images, "checkpoint_sha256": run.checkpoint_sha256, "config": asdict(config),
            "screen": None if screen is None else {"exact": screen.exact, "screened": screened,
                                                   "hard_images": len(screen.hard), "key": screen.key}}
    out = run.path / PREDICTOR_FILE
    replace(model, meta=meta).save(out)
    accs = [s.accuracy for s in measured + extra]
    return FitReport(out, len(measured) + len(extra), len(tr), len(ho), figures["holdout_spearman"],
                     figures["macs_spearman"], figures["holdout_mae"], (min(accs), max(accs)), measure_seconds,
                     t2 - t1, val_images, len(extra), screen, screened, calib_images)


def _measure(run: Run, archs: list[ArchConfig], held: list[ArchConfig], val: Split, calib: Calibration,
             uniform: bool, screen: bool, progress: bool,
             ctx: DistContext) -> tuple[list[Sample], list[Sample], Screen | None]:
    """Measurements of `archs` and, with `uniform`, of the uniformly scaled sub-networks not among them
    (the supernet already on `ctx.device`; collective under torchrun). With `screen`: the held-out ones, the
    uniform ones (and a few more up to SCREEN_MIN) on every image first, the rest on the images any of them
    got wrong. Returns the samples of `archs`, of the uniform ones, and the screen used."""
    grid = []
    if uniform:
        seen = set(archs)
        grid = [a for a in dict.fromkeys(run.space.canonical(a) for a in run.space.uniform_grid()) if a not in seen]
    everything = archs + grid
    if not screen:
        found = _measure_stage(run, everything, val, calib, None, progress, ctx)
        return [found[a] for a in archs], [found[a] for a in grid], None
    exact = exact_archs(archs, held, grid, SCREEN_MIN)
    found = _measure_stage(run, exact, val, calib, None, progress, ctx, desc="measuring sub-networks on every image")
    used = Screen.from_samples(list(found.values()), len(val))
    if used.exact < min(SCREEN_MIN, len(exact)):  # samples of an older version carry no per-image results
        used = None
    chosen = set(exact)
    rest = [a for a in everything if a not in chosen]
    desc = f"measuring sub-networks on the {len(used.hard)} hard images" if used else "measuring sub-networks"
    found.update(_measure_stage(run, rest, val, calib, used, progress, ctx, desc=desc))
    return [found[a] for a in archs], [found[a] for a in grid], used


def _measure_stage(run: Run, archs: list[ArchConfig], val: Split, calib: Calibration, screen: Screen | None,
                   progress: bool, ctx: DistContext,
                   desc: str = "measuring sub-networks") -> dict[ArchConfig, Sample]:
    """Samples of `archs`, measured in prefix order (consecutive sub-networks share their first blocks' work)
    on `val`, or on its hard images with a `screen`, BN recalibrated on `calib`; in two processes where that
    pays."""
    from factory.predictor.shared_prefix import SharedPrefixEvaluator
    from factory.predictor.two_process import adopt_helper_samples, measure_in_two, worth_splitting

    images, key = record_keys(screen, len(val))
    measured_val = val if screen is None else screen.split(val)
    shared = SharedPrefixEvaluator(run.supernet, calib.split, measured_val, run.mean, run.std, ctx.device, ctx=ctx)
    measure = measurer(shared, screen, calib.key)
    ordered = shared.order(archs)
    todo = ordered
    if ctx.world_size == 1:
        adopt_helper_samples(run.path)  # what the helper of an interrupted measurement had finished
        done = read_samples(run.path / SAMPLES_FILE, run.space, run.checkpoint_sha256, images, key, calib.key)
        todo = [a for a in ordered if a not in done]
    if worth_splitting(ctx.device, ctx.world_size, len(todo)):
        measured = measure_in_two(run, ordered, todo, measured_val, calib, measure, progress, screen, desc)
    else:
        measured = measure_samples(ordered, measure, run.path / SAMPLES_FILE, run.space, run.checkpoint_sha256,
                                   progress, images=images, ctx=ctx, screen=key, desc=desc, calib=calib.key)
    return {s.arch: s for s in measured}


def _holdout_figures(model: AccuracyPredictor, held: list[Sample], num_classes: int) -> dict[str, float]:
    """Spearman and mean absolute error of the predictions on the held-out samples, and the Spearman of
    MACs alone (the baseline a predictor has to beat)."""
    pred = model([s.arch for s in held])
    truth = [s.accuracy for s in held]
    return {"holdout_spearman": spearman(pred, truth),
            "macs_spearman": spearman([cost(model.space, s.arch, num_classes).macs for s in held], truth),
            "holdout_mae": float(np.mean(np.abs(np.asarray(pred) - np.asarray(truth))))}


@dataclass(frozen=True)
class Calibration:
    """The calibration images every measurement recalibrates BN on, and how its samples are recorded: `key`
    is their count, or None when they are the whole calib split (samples of older versions carry none)."""

    split: Split
    key: int | None

    @classmethod
    def of(cls, calib: Split, images: int | None, seed: int) -> Calibration:
        if images is None or images >= len(calib):
            return cls(calib, None)
        if images < 1:
            raise UserInputError(f"--calib-images: {images} must be at least 1")
        return cls(_stratified_subset(calib, images, seed), images)


def _stratified_subset(split: Split, n: int, seed: int) -> Split:
    """`n` images of `split` drawn at random within each class, each class's count in proportion to its share
    (largest remainders): BN statistics from a subset whose classes are off balance shift every sub-network's
    accuracy by its own amount."""
    gen = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(split.labels, return_counts=True)
    exact = counts.double() * n / len(split.labels)
    take = exact.floor().long()
    for i in torch.argsort(exact - take, descending=True)[: n - int(take.sum())]:
        take[i] += 1
    picked = []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        members = torch.nonzero(split.labels == c).flatten()
        picked.append(members[torch.randperm(len(members), generator=gen)[:k]])
    idx = torch.cat(picked).sort().values
    return Split(split.images[idx], split.labels[idx])


def _subset(split: Split, n: int, seed: int) -> Split:
    """A fixed random subset of a split (same for every sub-network, so rankings stay comparable)."""
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return Split(split.images[idx], split.labels[idx])
