"""Does the accuracy predictor rank sub-networks as well as their measured accuracies allow?

Two trained runs: a demo run on mnist5k (`--demo-run`, only read) and a run this bench trains on
scikit-learn's bundled 8x8 digits (1,797 images, written as 32-px PNGs, no network). Per run a pool
of stratified sub-networks (`factory.predictor.samples.stratified_archs`) is measured once, keeping
every validation image's hit, and split into a fixed held-out set and a training pool. Each predictor
variant is fitted per seed (a seed-shuffled training pool and the fit's own init) on the first N of
the pool and scored by its Spearman rank correlation with the measured accuracy of the held-out set.

The ceiling. Split the validation images into two random halves, measure every held-out sub-network
on each half: `r_half` = Spearman between halves, `r_full` = 2 r / (1 + r) (Spearman-Brown), the rank
agreement of two independent full-length measurements. A predictor is scored against ONE noisy
measurement, and a predictor that knew every sub-network's noise-free accuracy would reach about
sqrt(r_full) (correlation of the true score with a measurement, classical test theory), which can
exceed r_full. So the ceiling used for the goal is `sqrt(r_full)`; `r_full` and `r_half` are printed
too. Both are means over `--ceiling-splits` random halvings, for 25 / 50 / 100 % of the validation
images (each fraction corrected to its own length). It is not a hard bound: training and held-out
sub-networks are measured on the same images, and similar sub-networks miss the same images, so a
predictor can learn part of the "noise" too. The cross-image check removes that: fit on the accuracies
of one half of the images, score against the other half (its ceiling is sqrt(r_half)).

The cheap supernet signal (`proxy_*` variants): loss on 128 training images after recalibrating BN on 64
calibration images, timed separately from the measurement. As a feature it must be computed for every
candidate a search ranks, which the numpy-only predictor cannot do; it is here to price what it adds.

Everything is cached under `--work` (the digits ImageFolder and run, the measurements, the fits'
scores), so a rerun only fits what is new.

    .venv/bin/python bench/predictor_quality.py [--work /tmp/predictor_quality]
        [--demo-run /tmp/demo15/runs/demo] [--threads 1] [--variants a,b] [--sizes 100,200,450] [--refit]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel
from sklearn.linear_model import RidgeCV

from factory.data import to_model_input
from factory.evaluate import on_device, preserved_bn_stats, recalibrate_bn
from factory.predictor.features import cost_features, onehot_features, predictor_features, resolution_stage_features
from factory.predictor.fit import fit_trees, spearman, split_holdout
from factory.predictor.samples import stratified_archs
from factory.run import Run, load_run
from factory.training.config import load_preset
from supernets.arch import ArchConfig
from supernets.cost import block_shapes
from supernets.space import SearchSpace

HOLDOUT = 200  # fixed held-out sub-networks per dataset
POOL = 450  # training pool; a fit takes its first N after a seeded shuffle
SIZES = (100, 200, 450)
SEEDS = (0, 1, 2)
ARCH_SEED = 0  # which sub-networks are measured (the same for every variant and seed)
PROXY_CALIB, PROXY_IMAGES = 64, 128  # the cheap supernet signal: BN from 64 calib images, loss on 128 train images
MEASURED_FILE = "measured.jsonl"


# ----- the second dataset -------------------------------------------------------------------------
def write_sklearn_digits(folder: Path, size: int = 32) -> Path:
    """sklearn's bundled 8x8 digits (0..16) as an ImageFolder of `size`-px grey PNGs (bilinear)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    done = folder / ".complete"
    if done.exists():
        return folder
    digits = load_digits()
    for i, (img, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        out = folder / str(int(label))
        out.mkdir(parents=True, exist_ok=True)
        arr = np.clip(img * (255.0 / 16.0), 0, 255).astype(np.uint8)
        Image.fromarray(arr, mode="L").resize((size, size), Image.Resampling.BILINEAR).save(out / f"{i:04d}.png")
    done.write_text(f"{len(digits.target)}\n")
    return folder


def digits_config(path: Path) -> Path:
    """The demo preset with a data split for 1.8k images: 30 % validation (as the demo's mnist5k), 10 % test,
    and 40 steps per epoch (about the demo's 39 on mnist5k's 2.5k training images)."""
    cfg = load_preset("demo")
    cfg = replace(cfg, data=replace(cfg.data, val_fraction=0.3, test_fraction=0.1),
                  train=replace(cfg.train, steps_per_epoch=40))
    path.write_text(cfg.to_toml())
    return path


def train_digits_run(work: Path, threads: int) -> Path:
    """`factory train` on the digits folder (skipped when the run is complete)."""
    run = work / "digits_run"
    if (run / "summary.json").exists():
        return run
    folder = write_sklearn_digits(work / "digits_folder")
    cfg = digits_config(work / "digits_config.toml")
    cmd = [sys.executable, "-m", "factory", "train", "--data", str(folder), "--config", str(cfg),
           "--out", str(run), "--device", "cpu"]
    if (run / "checkpoints").exists():
        cmd.append("--resume")
    env = {"OMP_NUM_THREADS": str(threads)}
    print("training:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, **env})
    return run


# ----- measurements -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """One dataset's measured pool: `hits` (archs, val images) bool; proxies (archs,) from the supernet."""

    name: str
    archs: list[ArchConfig]
    hits: np.ndarray
    loss: np.ndarray  # mean val cross-entropy per arch
    proxy_loss: np.ndarray  # cheap signal: train-image loss after a 64-image BN recalibration
    proxy_acc: np.ndarray
    seconds: np.ndarray  # per measurement
    proxy_seconds: np.ndarray
    num_classes: int

    @property
    def accuracy(self) -> np.ndarray:
        return self.hits.mean(1)


@torch.no_grad()
def _forward(run: Run, arch: ArchConfig, images: torch.Tensor, labels: torch.Tensor,
             batch: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """Per-image hit and cross-entropy of the active (already recalibrated) sub-network."""
    hits, losses = [], []
    with run.supernet.activated(arch):
        for s in range(0, len(labels), batch):
            x = to_model_input(images[s:s + batch], arch.resolution, run.mean, run.std)
            logits = run.supernet(x.contiguous(memory_format=torch.channels_last)).float()
            y = labels[s:s + batch]
            hits.append((logits.argmax(1) == y).numpy())
            losses.append(F.cross_entropy(logits, y, reduction="none").numpy())
    return np.concatenate(hits), np.concatenate(losses)


def measure_one(run: Run, arch: ArchConfig) -> dict:
    """What `factory.evaluate.evaluate_on` does (BN recalibrated on all of calib, then val), keeping each
    image's hit; then the cheap proxy, timed on its own."""
    ds = run.dataset()
    net = run.supernet
    t0 = time.perf_counter()
    with preserved_bn_stats(net):
        recalibrate_bn(net, arch, ds.calib.images, run.mean, run.std)
        hits, losses = _forward(run, arch, ds.val.images, ds.val.labels)
    t1 = time.perf_counter()
    with preserved_bn_stats(net):
        recalibrate_bn(net, arch, ds.calib.images[:PROXY_CALIB], run.mean, run.std)
        p_hits, p_losses = _forward(run, arch, ds.train.images[:PROXY_IMAGES], ds.train.labels[:PROXY_IMAGES])
    t2 = time.perf_counter()
    return {"arch": arch.to_dict(), "hits": np.packbits(hits).tobytes().hex(), "n": len(hits),
            "loss": float(losses.mean()), "proxy_loss": float(p_losses.mean()), "proxy_acc": float(p_hits.mean()),
            "seconds": t1 - t0, "proxy_seconds": t2 - t1}


def measure_pool(name: str, run_dir: Path, work: Path, n: int) -> Measured:
    """The pool's measurements, resumable from `work/name/measured.jsonl` (keyed by checkpoint sha256)."""
    run = load_run(run_dir)
    archs = stratified_archs(run.space, n, random.Random(ARCH_SEED), run.num_classes)
    path = work / name / MEASURED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    done: dict[ArchConfig, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if d.get("checkpoint") == run.checkpoint_sha256:
                done[run.space.canonical(ArchConfig.from_dict(d["arch"]))] = d
    todo = [a for a in archs if a not in done]
    if todo:
        print(f"{name}: measuring {len(todo)} of {len(archs)} sub-networks "
              f"({len(run.dataset().val)} val images)", flush=True)
        t0 = time.perf_counter()
        with on_device(run.supernet, torch.device("cpu")), path.open("a") as fh:
            for i, arch in enumerate(todo):
                d = {**measure_one(run, arch), "checkpoint": run.checkpoint_sha256}
                fh.write(json.dumps(d) + "\n")
                fh.flush()
                done[arch] = d
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1}/{len(todo)}  {time.perf_counter() - t0:.0f}s", flush=True)
    rows = [done[a] for a in archs]
    hits = np.stack([np.unpackbits(np.frombuffer(bytes.fromhex(d["hits"]), np.uint8))[: d["n"]].astype(bool)
                     for d in rows])
    col = lambda k: np.array([d[k] for d in rows], dtype=np.float64)  # noqa: E731
    return Measured(name, archs, hits, col("loss"), col("proxy_loss"), col("proxy_acc"), col("seconds"),
                    col("proxy_seconds"), run.num_classes)


# ----- the ceiling --------------------------------------------------------------------------------
def split_half_ceiling(hits: np.ndarray, fraction: float, splits: int, seed: int = 0) -> dict[str, float]:
    """Mean split-half Spearman of sub-network accuracies on `fraction` of the images (a fresh random
    subset and halving per split), its Spearman-Brown correction to that subset's length, and the sqrt
    of the latter (what a predictor of the noise-free accuracy would reach against one measurement)."""
    rng = np.random.default_rng(seed)
    n = hits.shape[1]
    m = round(fraction * n) // 2 * 2
    rs = []
    for _ in range(splits):
        idx = rng.permutation(n)[:m]
        a, b = hits[:, idx[: m // 2]].mean(1), hits[:, idx[m // 2:]].mean(1)
        rs.append(spearman(a, b))
    r = float(np.mean(rs))
    full = spearman_brown(r, 2.0)
    return {"images": m, "r_half": r, "r_full": full, "ceiling": float(np.sqrt(max(full, 0.0)))}


def spearman_brown(r: float, factor: float) -> float:
    """Reliability of a measurement `factor` times as long as one of reliability `r`."""
    return factor * r / (1 + (factor - 1) * r)


# ----- feature sets -------------------------------------------------------------------------------
def stage_macs_features(space: SearchSpace, archs: list[ArchConfig]) -> np.ndarray:
    """(N, S): per stage log MACs of its active blocks, 0..1 between the smallest and the largest
    sub-network's, x5 like the cost features."""
    shapes = block_shapes(space)

    def per_stage(a: ArchConfig) -> np.ndarray:
        out = np.zeros(len(space.stages))
        for st, pos, k, e in space.active_blocks(a):
            b = shapes[(st, pos == 0, k, e, a.resolution)]
            out[st] += b.pointwise_macs + b.depthwise_macs
        return np.log(out)

    lo, hi = per_stage(space.smallest()), per_stage(space.largest())
    return np.stack([(per_stage(a) - lo) / (hi - lo) * 5.0 for a in archs]).astype(np.float32)


def compact_features(space: SearchSpace, archs: list[ArchConfig], num_classes: int) -> np.ndarray:
    """(N, R + 3S + 2 + S): resolution one-hot, per stage depth / mean kernel / mean expand (0..1), log
    MACs and params, per-stage log MACs: a few dozen numbers instead of hundreds."""
    res = np.array([[a.resolution == r for r in space.resolutions] for a in archs], dtype=np.float32)
    n_stages = len(space.stages)
    summ = np.zeros((len(archs), 3, n_stages), dtype=np.float32)
    for i, a in enumerate(archs):
        for st, stage in enumerate(space.stages):
            active = list(space.stage_slots(st))[: a.depths[st]]
            d = stage.depth_choices
            summ[i, 0, st] = (a.depths[st] - min(d)) / (max(d) - min(d))
            summ[i, 1, st] = (np.mean([a.kernel_sizes[j] for j in active]) - 3) / 4
            summ[i, 2, st] = (np.mean([a.expand_ratios[j] for j in active]) - 3) / 3
    return np.concatenate([res, summ.reshape(len(archs), -1), cost_features(space, archs, num_classes),
                           stage_macs_features(space, archs)], axis=1)


def feature_sets(space: SearchSpace, archs: list[ArchConfig], num_classes: int) -> dict[str, np.ndarray]:
    """v3: the features of predictor file version 3 (one-hot, cost, resolution x stage); current: today's
    `predictor_features` (v3 + resolution x block); compact: `compact_features`."""
    v3 = np.concatenate([onehot_features(space, archs), cost_features(space, archs, num_classes),
                         resolution_stage_features(space, archs)], axis=1)
    return {"v3": v3, "current": predictor_features(space, archs, num_classes),
            "compact": compact_features(space, archs, num_classes)}


# ----- predictor variants -------------------------------------------------------------------------
@dataclass(frozen=True)
class Fold:
    """One fit: the training rows and the held-out rows of every feature set, and the seed."""

    space: SearchSpace
    num_classes: int
    archs_tr: list[ArchConfig]
    archs_te: list[ArchConfig]
    y_tr: np.ndarray
    x_tr: dict[str, np.ndarray]
    x_te: dict[str, np.ndarray]
    proxy_tr: np.ndarray
    proxy_te: np.ndarray
    seed: int


def v_mlp_ridge_v3(f: Fold) -> np.ndarray:
    """The default up to predictor file version 3, as it was: 3 MLPs (128-128, ReLU; full-batch Adam, lr
    3e-3, weight decay 1e-2, 500 cosine epochs, standardised MSE) averaged half and half with a closed-form
    ridge (penalty 30) on the v3 features. Returns standardised predictions (the old `fit_mlp` up to its
    affine map back to accuracy: the same ranks)."""
    x = torch.from_numpy(f.x_tr["v3"].astype(np.float32))
    y = torch.tensor(f.y_tr, dtype=torch.float32)
    mean, std = float(y.mean()), float(y.std())
    yn = (y - mean) / std
    gen = torch.Generator().manual_seed(f.seed)
    xt = f.x_te["v3"].astype(np.float32)
    outs = []
    for _ in range(3):
        params = []
        for fan_in, fan_out in itertools.pairwise([x.shape[1], 128, 128, 1]):
            bound = (6.0 / fan_in) ** 0.5 if fan_out != 1 else (1.0 / fan_in) ** 0.5
            w = ((torch.rand(fan_in, fan_out, generator=gen) * 2 - 1) * bound).requires_grad_()
            params.append((w, torch.zeros(fan_out, requires_grad=True)))
        opt = torch.optim.Adam([p for wb in params for p in wb], lr=3e-3, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 500)
        for _ in range(500):
            h = x
            for i, (w, b) in enumerate(params):
                h = h @ w + b
                h = torch.relu(h) if i < len(params) - 1 else h
            loss = torch.mean((h[:, 0] - yn) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        h = xt
        for i, (w, b) in enumerate(params):
            h = h @ w.detach().numpy() + b.detach().numpy()
            h = np.maximum(h, 0.0) if i < len(params) - 1 else h
        outs.append(h[:, 0])
    xd, yd = f.x_tr["v3"].astype(np.float64), yn.numpy().astype(np.float64)
    xm, ym = xd.mean(0), yd.mean()
    a = xd - xm
    w = np.linalg.solve(a.T @ a + 30.0 * np.eye(a.shape[1]), a.T @ (yd - ym))
    ridge = (xt - xm) @ w + ym
    return 0.5 * np.mean(outs, axis=0) + 0.5 * ridge


def v_trees(f: Fold) -> np.ndarray:
    """Today's default: `factory.predictor.fit.fit_trees` (boosted trees on `predictor_features`)."""
    return fit_trees(f.space, f.archs_tr, f.y_tr, f.seed, num_classes=f.num_classes)(f.archs_te)


def v_ridge_cv(f: Fold, feats: str) -> np.ndarray:
    """Ridge with its penalty picked per fit by efficient leave-one-out over 1e-2..1e4."""
    return RidgeCV(alphas=np.logspace(-2, 4, 25)).fit(f.x_tr[feats], f.y_tr).predict(f.x_te[feats])


def v_gp(f: Fold, feats: str) -> np.ndarray:
    """Gaussian process: linear + constant x RBF + white noise, hyper-parameters by marginal likelihood."""
    scale = float(np.sqrt(f.x_tr[feats].shape[1]))
    kernel = (ConstantKernel(1.0) * RBF(length_scale=scale, length_scale_bounds=(1e-2, 1e3)) + WhiteKernel(0.1)
              + ConstantKernel(0.1) * DotProduct(sigma_0=1.0))
    gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=0, random_state=f.seed)
    return gp.fit(f.x_tr[feats], f.y_tr).predict(f.x_te[feats])


def v_sk_gbt(f: Fold, feats: str, extra: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """scikit-learn's GradientBoostingRegressor with the settings of `FitConfig` (a reference for the
    factory's own boosting); `extra` = columns appended to the training and held-out features."""
    x_tr, x_te = f.x_tr[feats], f.x_te[feats]
    if extra is not None:
        x_tr, x_te = np.concatenate([x_tr, extra[0][:, None]], 1), np.concatenate([x_te, extra[1][:, None]], 1)
    m = GradientBoostingRegressor(n_estimators=400, learning_rate=0.03, max_depth=3, subsample=0.8,
                                  min_samples_leaf=5, random_state=f.seed)
    return m.fit(x_tr, f.y_tr).predict(x_te)


def v_rf(f: Fold, feats: str) -> np.ndarray:
    m = RandomForestRegressor(n_estimators=500, min_samples_leaf=2, max_features=0.3, random_state=f.seed, n_jobs=1)
    return m.fit(f.x_tr[feats], f.y_tr).predict(f.x_te[feats])


def v_ranknet(f: Fold, feats: str, epochs: int = 300, ensemble: int = 3) -> np.ndarray:
    """MLP ensemble (64-64) trained on a pairwise logistic (RankNet) loss over every training pair plus a
    0.1-weighted MSE term, full batch, Adam lr 3e-3, weight decay 1e-2."""
    x = torch.from_numpy(f.x_tr[feats].astype(np.float32))
    xt = torch.from_numpy(f.x_te[feats].astype(np.float32))
    y = torch.from_numpy(((f.y_tr - f.y_tr.mean()) / (f.y_tr.std() + 1e-9)).astype(np.float32))
    sign = torch.sign(y[:, None] - y[None, :])
    gen = torch.Generator().manual_seed(f.seed)
    outs = []
    for _ in range(ensemble):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                  torch.nn.ReLU(), torch.nn.Linear(64, 1))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-2)
        for _ in range(epochs):
            p = net(x)[:, 0]
            loss = F.softplus(-sign * (p[:, None] - p[None, :]))[sign != 0].mean() + 0.1 * torch.mean((p - y) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            outs.append(net(xt)[:, 0].numpy())
    return np.mean(outs, axis=0)


def _z(p: np.ndarray) -> np.ndarray:
    return (p - p.mean()) / (p.std() + 1e-12)


VARIANTS: dict[str, Callable[[Fold], np.ndarray]] = {
    "macs_only": lambda f: f.x_te["compact"][:, len(f.space.resolutions) + 3 * len(f.space.stages)],
    "proxy_only": lambda f: -f.proxy_te,  # no fit: minus the cheap proxy's loss
    "mlp+ridge_v3 (old)": v_mlp_ridge_v3,
    "ridgecv_v3": lambda f: v_ridge_cv(f, "v3"),
    "ridgecv_current": lambda f: v_ridge_cv(f, "current"),
    "gp_v3": lambda f: v_gp(f, "v3"),
    "ranknet_v3": lambda f: v_ranknet(f, "v3"),
    "rf_current": lambda f: v_rf(f, "current"),
    "skgbt_compact": lambda f: v_sk_gbt(f, "compact"),
    "skgbt_v3": lambda f: v_sk_gbt(f, "v3"),
    "skgbt_current": lambda f: v_sk_gbt(f, "current"),
    "trees (default)": v_trees,
    "trees+ridgecv": lambda f: 0.8 * _z(v_trees(f)) + 0.2 * _z(v_ridge_cv(f, "current")),
    "skgbt_current+proxy": lambda f: v_sk_gbt(f, "current", (f.proxy_tr, f.proxy_te)),
}
DEFAULT_VARIANT = "trees (default)"
BASELINE_VARIANT = "mlp+ridge_v3 (old)"


# ----- the bench ----------------------------------------------------------------------------------
def _folds(m: Measured, feats: dict[str, np.ndarray], space: SearchSpace, n: int, seed: int,
           targets: np.ndarray) -> tuple[Fold, list[int]]:
    """The fit on the first `n` of the seed-shuffled training pool, against the fixed held-out set."""
    pool_idx, held_idx = split_holdout(len(m.archs), HOLDOUT)
    order = list(pool_idx)
    random.Random(1000 + seed).shuffle(order)
    tr = order[:n]
    return Fold(space, m.num_classes, [m.archs[i] for i in tr], [m.archs[i] for i in held_idx], targets[tr],
                {k: v[tr] for k, v in feats.items()}, {k: v[held_idx] for k, v in feats.items()},
                m.proxy_loss[tr], m.proxy_loss[held_idx], seed), held_idx


def score_variants(m: Measured, space: SearchSpace, variants: list[str], sizes: tuple[int, ...],
                   cache: dict, save: Callable[[], None]) -> None:
    """Held-out Spearman of every variant x seed x size not yet in `cache`."""
    feats = feature_sets(space, m.archs, m.num_classes)
    for name in variants:
        for seed in SEEDS:
            for n in sizes:
                key = f"{m.name}|{name}|{seed}|{n}"
                if key not in cache:
                    fold, held = _folds(m, feats, space, n, seed, m.accuracy)
                    t0 = time.perf_counter()
                    pred = VARIANTS[name](fold)
                    cache[key] = {"spearman": spearman(pred, m.accuracy[held]), "fit_seconds": time.perf_counter() - t0}
        save()
        print(f"  {m.name}: {name} scored", flush=True)


def score_cross_images(m: Measured, space: SearchSpace, variants: list[str], sizes: tuple[int, ...],
                       cache: dict, save: Callable[[], None]) -> None:
    """The same fits on accuracies from one random half of the validation images, scored against the held-out
    sub-networks' accuracy on the other half: what a predictor learnt of the sub-networks themselves, not of
    this validation set's images (a seed draws the halving)."""
    feats = feature_sets(space, m.archs, m.num_classes)
    n_val = m.hits.shape[1]
    for name in variants:
        for seed in SEEDS:
            perm = np.random.default_rng(seed).permutation(n_val)
            acc_a, acc_b = m.hits[:, perm[: n_val // 2]].mean(1), m.hits[:, perm[n_val // 2:]].mean(1)
            for n in sizes:
                key = f"xhalf|{m.name}|{name}|{seed}|{n}"
                if key not in cache:
                    fold, held = _folds(m, feats, space, n, seed, acc_a)
                    cache[key] = {"spearman": spearman(VARIANTS[name](fold), acc_b[held])}
        save()


def _cells(cache: dict, prefix: str, n: int) -> list[float]:
    return [cache[f"{prefix}|{s}|{n}"]["spearman"] for s in SEEDS]


def print_tables(datasets: list[str], variants: list[str], sizes: tuple[int, ...], cache: dict,
                 cross: list[str], ceilings: dict) -> None:
    seeds = " ".join(f"{'s' + str(s):>6s}" for s in SEEDS)
    print(f"\nheld-out Spearman ({HOLDOUT} sub-networks per dataset) per seed, mean and min over seeds")
    print(f"{'variant':22s} {'dataset':15s} {'N':>4s} {seeds}  {'mean':>6s} {'min':>6s}  fit s")
    for v in variants:
        for d in datasets:
            for n in sizes:
                r = _cells(cache, f"{d}|{v}", n)
                secs = np.mean([cache[f"{d}|{v}|{s}|{n}"]["fit_seconds"] for s in SEEDS])
                print(f"{v:22s} {d:15s} {n:4d} " + " ".join(f"{x:6.3f}" for x in r)
                      + f"  {np.mean(r):6.3f} {min(r):6.3f}  {secs:5.1f}")
    head = " ".join(f"{d[:9] + '@' + str(n):>15s}" for d in datasets for n in sizes)
    print(f"\nsummary: mean over {len(SEEDS)} seeds\n{'variant':22s} {head}")
    for v in variants:
        print(f"{v:22s} " + " ".join(f"{np.mean(_cells(cache, f'{d}|{v}', n)):15.3f}" for d in datasets for n in sizes))
    if cross:
        print("\ncross-image check: fit on one half of the val images, scored on the other half (mean over seeds); "
              "ceiling sqrt(r_half): " + ", ".join(f"{d} {np.sqrt(ceilings[d][-1]['r_half']):.3f}" for d in datasets))
        print(f"{'variant':22s} {head}")
        for v in cross:
            print(f"{v:22s} " + " ".join(f"{np.mean(_cells(cache, f'xhalf|{d}|{v}', n)):15.3f}"
                                         for d in datasets for n in sizes))


def _verdict(value: float, target: float) -> str:
    return "met" if value >= target else f"short by {target - value:.3f}"


def print_goal(datasets: list[str], cache: dict, ceilings: dict, n: int = 200) -> None:
    print(f"\ngoal at {n} samples: held-out Spearman >= 0.9, or within 0.05 of the ceiling where it is below 0.95")
    for d in datasets:
        c = ceilings[d][-1]["ceiling"]
        target = 0.9 if c >= 0.95 else c - 0.05
        for v in (BASELINE_VARIANT, DEFAULT_VARIANT):
            r = _cells(cache, f"{d}|{v}", n)
            print(f"  {d:15s} {v:22s} target {target:.3f} (ceiling {c:.3f}): mean {np.mean(r):.3f} "
                  f"{_verdict(float(np.mean(r)), target)}, worst seed {min(r):.3f} {_verdict(min(r), target)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/predictor_quality"))
    parser.add_argument("--demo-run", type=Path, default=Path("/tmp/demo15/runs/demo"),
                        help="a finished mnist5k demo run (only read)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and measuring")
    parser.add_argument("--variants", default="all", help=f"comma list of {list(VARIANTS)} or 'all'")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--ceiling-splits", type=int, default=50)
    parser.add_argument("--refit", action="store_true", help="forget the cached scores (after changing a variant)")
    args = parser.parse_args()
    t_start = time.perf_counter()
    warnings.filterwarnings("ignore", module="sklearn")  # GP bound notes: the fit is scored, not trusted
    torch.set_num_threads(args.threads)
    variants = list(VARIANTS) if args.variants == "all" else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; allowed: {list(VARIANTS)}")
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if max(sizes) > POOL:
        parser.error(f"--sizes: at most {POOL} (the training pool)")
    if not (args.demo_run / "summary.json").exists():
        parser.error(f"--demo-run: {args.demo_run} has no summary.json (not a finished run)")
    args.work.mkdir(parents=True, exist_ok=True)
    runs = {"mnist5k": args.demo_run, "sklearn_digits": train_digits_run(args.work, args.threads)}
    trained = json.loads((runs["sklearn_digits"] / "summary.json").read_text())
    print(f"sklearn_digits run: trained in {trained['elapsed_seconds']:.0f} s wall (cached in {args.work})")
    cache_path = args.work / "scores.json"
    cache = {} if args.refit or not cache_path.exists() else json.loads(cache_path.read_text())

    def save() -> None:
        cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True))

    cross = [v for v in (BASELINE_VARIANT, DEFAULT_VARIANT) if v in variants]
    ceilings = {}
    for name, run_dir in runs.items():
        m = measure_pool(name, run_dir, args.work, POOL + HOLDOUT)
        held = split_holdout(len(m.archs), HOLDOUT)[1]
        ceilings[name] = [split_half_ceiling(m.hits[held], fr, args.ceiling_splits) for fr in (0.25, 0.5, 1.0)]
        acc = m.accuracy[held]
        cost = float(m.seconds.sum() + m.proxy_seconds.sum())
        print(f"\n{name}: measuring cost in the cache {cost:.0f} s ({m.seconds.sum():.0f} s measurements, "
              f"{m.proxy_seconds.sum():.0f} s proxies, as timed on a shared machine)")
        print(f"{name}: {len(m.archs)} sub-networks measured, {m.hits.shape[1]} val images; held-out accuracy "
              f"{acc.min():.4f}..{acc.max():.4f} (sd {acc.std():.4f}); medians: measurement "
              f"{np.median(m.seconds):.2f} s, proxy {np.median(m.proxy_seconds):.3f} s", flush=True)
        space = load_run(run_dir).space
        score_variants(m, space, variants, sizes, cache, save)
        score_cross_images(m, space, cross, sizes, cache, save)
    print(f"\nceiling on the {HOLDOUT} held-out sub-networks (mean of {args.ceiling_splits} random halvings): "
          "r_half / r_full (Spearman-Brown) / ceiling = sqrt(r_full)")
    for name, rows in ceilings.items():
        for c in rows:
            print(f"  {name:15s} {c['images']:5d} val images: "
                  f"{c['r_half']:.3f} / {c['r_full']:.3f} / {c['ceiling']:.3f}")
        full = rows[-1]
        for factor in (2, 4):
            r = spearman_brown(full["r_full"], factor)
            print(f"  {name:15s} {factor * full['images']:5d} val images (Spearman-Brown projection): "
                  f"r_full {r:.3f}, ceiling {np.sqrt(r):.3f}")
    print_tables(list(runs), variants, sizes, cache, cross, ceilings)
    if BASELINE_VARIANT in variants and DEFAULT_VARIANT in variants and 200 in sizes:
        print_goal(list(runs), cache, ceilings)
    (args.work / "ceilings.json").write_text(json.dumps(ceilings, indent=1))
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
