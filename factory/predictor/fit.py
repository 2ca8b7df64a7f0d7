"""`factory predictor fit`: sample sub-networks, measure them, fit the predictor, store it in the run.

Sub-networks are sampled stratified over resolution and size (`samples.stratified_archs`), measured with
`factory.evaluate` (BN recalibrated, validation split; resumable through `predictor_samples.jsonl`),
and all but `holdout` of them fit the MLP ensemble and its ridge member. `predictor.pt` records the
held-out Spearman rank correlation of the stored model itself (not of a refit). Under torchrun each
sub-network's validation images are split across the ranks (same figures as one process); rank 0
alone writes the samples and fits.
"""

from __future__ import annotations

import itertools
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
from factory.evaluate import evaluate_on, on_device
from factory.predictor.features import predictor_features
from factory.predictor.model import PREDICTOR_FILE, AccuracyPredictor
from factory.predictor.samples import SAMPLES_FILE, Sample, measure_samples, stratified_archs
from factory.run import Run, load_run
from factory.training.distributed import DistContext
from supernets.arch import ArchConfig
from supernets.cost import cost
from supernets.space import SearchSpace


@dataclass(frozen=True)
class FitConfig:
    """Chosen by held-out Spearman on measured sub-networks of a briefly trained run: with ~150 samples
    strong weight decay matters most (docs/decisions.md has the comparison)."""

    hidden: int = 128
    depth: int = 2  # hidden layers
    ensemble: int = 3
    epochs: int = 500
    lr: float = 3e-3
    weight_decay: float = 1e-2
    ridge: float = 30.0  # L2 penalty of the ridge member (on features, standardised targets)
    ridge_weight: float = 0.5  # its share of the prediction (the MLP mean gets the rest)


def fit_mlp(
    space: SearchSpace,
    archs: Sequence[ArchConfig],
    targets: Sequence[float],
    seed: int = 0,
    config: FitConfig = FitConfig(),
    num_classes: int = 10,
) -> AccuracyPredictor:
    """Fit the MLP ensemble (full-batch Adam on standardised MSE) and the ridge member."""
    if len(archs) < 4:
        raise UserInputError(f"predictor: need at least 4 measured sub-networks to fit, got {len(archs)}")
    feats = predictor_features(space, archs, num_classes)
    x = torch.from_numpy(feats)
    y = torch.tensor(list(targets), dtype=torch.float32)
    mean = float(y.mean())
    std = float(y.std()) if len(y) > 1 and float(y.std()) > 1e-8 else 1.0
    yn = (y - mean) / std
    gen = torch.Generator().manual_seed(seed)
    members = tuple(_fit_member(x, yn, config, gen) for _ in range(config.ensemble))
    return AccuracyPredictor(space, members, mean, std, num_classes,
                             _ridge(feats.astype(np.float64), yn.numpy().astype(np.float64), config.ridge),
                             config.ridge_weight)


def _fit_member(x: torch.Tensor, yn: torch.Tensor, config: FitConfig,
                gen: torch.Generator) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """One MLP of the ensemble, initialised from `gen`: its layers as numpy (W, b) pairs."""
    params = []
    sizes = [x.shape[1]] + [config.hidden] * config.depth + [1]
    for fan_in, fan_out in itertools.pairwise(sizes):
        bound = (6.0 / fan_in) ** 0.5 if fan_out != 1 else (1.0 / fan_in) ** 0.5
        w = ((torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound).requires_grad_()
        b = torch.zeros(fan_out, requires_grad=True)
        params.append((w, b))
    opt = torch.optim.Adam([p for wb in params for p in wb], lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs)
    for _ in range(config.epochs):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = torch.relu(h)
        loss = torch.mean((h[:, 0] - yn) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return tuple((w.detach().numpy().copy(), b.detach().numpy().copy()) for w, b in params)


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept, as a linear layer (W (F, 1), b (1,))."""
    xm, ym = x.mean(0), y.mean()
    a = x - xm
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y - ym))
    return w[:, None].astype(np.float32), np.array([ym - xm @ w], dtype=np.float32)


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

    def to_dict(self) -> dict[str, Any]:
        return {"predictor": str(self.path), "samples": self.samples, "train": self.train, "holdout": self.holdout,
                "holdout_spearman": round(self.holdout_spearman, 4), "macs_spearman": round(self.macs_spearman, 4),
                "holdout_mae": round(self.holdout_mae, 5), "accuracy_range": list(self.accuracy_range),
                "measure_seconds": round(self.measure_seconds, 1), "fit_seconds": round(self.fit_seconds, 1),
                "val_images": self.val_images, "uniform": self.uniform}


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
) -> FitReport:
    """`factory predictor fit`: sample, measure (resumable), fit, store predictor.pt in the run.

    With `uniform`, the space's uniformly scaled sub-networks are measured too and join the training
    set (the held-out set stays random, stratified sub-networks): the search's verification then
    knows their real accuracy, so a pick can never lose to a hand-scaled network that was measured.
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
        ds = run.dataset()
        val = ds.val if val_images is None or val_images >= len(ds.val) else _subset(ds.val, val_images, seed)
        t0 = time.perf_counter()
        with on_device(run.supernet, ctx.device):
            measured, extra = _measure(run, archs, val, uniform, progress, ctx)
        seconds = time.perf_counter() - t0
        report = _fit_and_store(run, measured, extra, holdout, seed, config, seconds, len(val)) if ctx.is_main else None
        return ctx.broadcast_object(report)
    finally:
        ctx.close()


def _fit_and_store(run: Run, measured: list[Sample], extra: list[Sample], holdout: int, seed: int,
                   config: FitConfig, measure_seconds: float, val_images: int) -> FitReport:
    """Fit on all but `holdout` of `measured` (+ `extra`), score on the held-out ones, write predictor.pt."""
    t1 = time.perf_counter()
    train_idx, held_idx = split_holdout(len(measured), holdout)
    tr = [measured[i] for i in train_idx] + extra
    ho = [measured[i] for i in held_idx]
    model = fit_mlp(run.space, [s.arch for s in tr], [s.accuracy for s in tr], seed, config, run.num_classes)
    figures = _holdout_figures(model, ho, run.num_classes)
    t2 = time.perf_counter()
    meta = {**figures, "train": len(tr), "holdout": len(ho), "seed": seed, "val_images": val_images,
            "checkpoint_sha256": run.checkpoint_sha256, "config": asdict(config)}
    out = run.path / PREDICTOR_FILE
    replace(model, meta=meta).save(out)
    accs = [s.accuracy for s in measured + extra]
    return FitReport(out, len(measured) + len(extra), len(tr), len(ho), figures["holdout_spearman"],
                     figures["macs_spearman"], figures["holdout_mae"], (min(accs), max(accs)), measure_seconds,
                     t2 - t1, val_images, len(extra))


def _measure(run: Run, archs: list[ArchConfig], val: Split, uniform: bool, progress: bool,
             ctx: DistContext) -> tuple[list[Sample], list[Sample]]:
    """Measurements of `archs` and, with `uniform`, of the uniformly scaled sub-networks not among them
    (the supernet already on `ctx.device`; collective under torchrun)."""
    ds = run.dataset()

    def measure(arch: ArchConfig) -> tuple[float, float, int]:
        r = evaluate_on(run.supernet, arch, ds.calib, val, run.mean, run.std, ctx.device, ctx=ctx)
        return r.accuracy, r.loss, r.images

    grid = []
    if uniform:
        seen = set(archs)
        grid = [a for a in dict.fromkeys(run.space.canonical(a) for a in run.space.uniform_grid()) if a not in seen]
    every = measure_samples(archs + grid, measure, run.path / SAMPLES_FILE, run.space, run.checkpoint_sha256,
                            progress, images=len(val), ctx=ctx)
    return every[: len(archs)], every[len(archs):]


def _holdout_figures(model: AccuracyPredictor, held: list[Sample], num_classes: int) -> dict[str, float]:
    """Spearman and mean absolute error of the predictions on the held-out samples, and the Spearman of
    MACs alone (the baseline a predictor has to beat)."""
    pred = model([s.arch for s in held])
    truth = [s.accuracy for s in held]
    return {"holdout_spearman": spearman(pred, truth),
            "macs_spearman": spearman([cost(model.space, s.arch, num_classes).macs for s in held], truth),
            "holdout_mae": float(np.mean(np.abs(np.asarray(pred) - np.asarray(truth))))}


def _subset(split: Split, n: int, seed: int) -> Split:
    """A fixed random subset of a split (same for every sub-network, so rankings stay comparable)."""
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return Split(split.images[idx], split.labels[idx])
