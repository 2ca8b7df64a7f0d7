"""Accuracy predictor: a small MLP on the one-hot encoding of a sub-network (OFA-style).

Why: measuring one sub-network costs ~1 s (BN recalibration + validation), so a search over 10^4
candidates needs a predictor. Fitting it: sample sub-networks stratified over resolution and size
(MACs tertiles per resolution), measure each with `factory.evaluate` (BN recalibrated, validation
split), append every measurement to `predictor_samples.jsonl` in the run (resumable: a rerun skips
what is measured), fit an ensemble of small MLPs on all but `holdout` samples, and store
`predictor.pt` with the Spearman rank correlation on the held-out ones (the figure of the stored
model, not of a refit).

Prediction is a numpy forward over a whole batch (no torch in the search loop, picklable for a
process pool): ~10^4 candidates per call in milliseconds.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from factory.errors import UserInputError
from supernets.arch import ArchConfig
from supernets.cost import cost
from supernets.space import SearchSpace

PREDICTOR_FILE = "predictor.pt"
SAMPLES_FILE = "predictor_samples.jsonl"
PREDICTOR_VERSION = 3  # 2: cost features + ridge member; 3: resolution x stage interaction features


# ----- encoding ------------------------------------------------------------------------------------
def onehot_features(space: SearchSpace, archs: Sequence[ArchConfig]) -> np.ndarray:
    """(N, F) float32: one-hot resolution and depth per stage; one-hot kernel and expand per *active*
    slot, all zeros for inactive slots (so equal networks encode equally, as in OFA)."""
    genes = space.gene_choices
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in genes])])
    n_stages = len(space.stages)
    slot_stage = np.array([st for st in range(n_stages) for _ in space.stage_slots(st)])
    slot_pos = np.array([pos for st in range(n_stages) for pos, _ in enumerate(space.stage_slots(st))])
    index = [{v: i for i, v in enumerate(c)} for c in genes]  # not space.encode: no re-validation per arch
    try:
        genome = np.array([[ix[v] for ix, v in zip(index, (a.resolution, *a.depths, *a.kernel_sizes,
                                                            *a.expand_ratios), strict=True)] for a in archs],
                          dtype=np.int64).reshape(len(archs), len(genes))
    except (KeyError, ValueError):
        for a in archs:
            space.validate(a)  # names the bad field
        raise
    depths = np.array([a.depths for a in archs], dtype=np.int64).reshape(len(archs), n_stages)
    active = slot_pos[None, :] < depths[:, slot_stage]  # (N, slots)
    mask = np.concatenate([np.ones((len(archs), 1 + n_stages), bool), active, active], axis=1)
    feats = np.zeros((len(archs), int(offsets[-1])), dtype=np.float32)
    rows = np.repeat(np.arange(len(archs)), len(genes))
    cols = (genome + offsets[None, :-1]).reshape(-1)
    feats[rows, cols] = mask.reshape(-1)
    return feats


COST_FEATURE_SCALE = 5.0  # ~z-score scale: small scales let the weight decay / ridge penalty drown them


def cost_features(space: SearchSpace, archs: Sequence[ArchConfig], num_classes: int) -> np.ndarray:
    """(N, 2): log MACs and log params, 0..1 between the smallest and largest sub-network, x5.
    With ~100-200 samples they carry most of the size -> accuracy trend, so the one-hot part only has
    to learn the rest (held-out Spearman 0.65 -> 0.75 on the demo supernet with 76 training samples)."""
    lo, hi = cost(space, space.smallest(), num_classes), cost(space, space.largest(), num_classes)
    out = np.empty((len(archs), 2), dtype=np.float32)
    for i, a in enumerate(archs):
        c = cost(space, a, num_classes)
        out[i, 0] = (np.log(c.macs) - np.log(lo.macs)) / (np.log(hi.macs) - np.log(lo.macs))
        out[i, 1] = (np.log(c.params) - np.log(lo.params)) / (np.log(hi.params) - np.log(lo.params))
    return out * COST_FEATURE_SCALE


def resolution_stage_features(space: SearchSpace, archs: Sequence[ArchConfig]) -> np.ndarray:
    """(N, R * 3 * S): per stage mean kernel / 7, mean expand / 6 and depth / 4, placed in the block of
    the arch's resolution (zeros elsewhere). Why: what a kernel is worth depends on the input size --
    on the demo supernet 3x3 kernels everywhere are the best choice at 20 px and the worst at 32 px
    (97.1% vs 91.1%) -- an interaction a one-hot encoding only learns from many more samples (4-fold
    CV Spearman 0.64 -> 0.69 with 256 samples)."""
    n_stages = len(space.stages)
    res_index = {r: i for i, r in enumerate(space.resolutions)}
    out = np.zeros((len(archs), len(space.resolutions), 3, n_stages), dtype=np.float32)
    slots = [list(space.stage_slots(st)) for st in range(n_stages)]
    for i, a in enumerate(archs):
        block = out[i, res_index[a.resolution]]
        for st in range(n_stages):
            active = slots[st][: a.depths[st]]
            block[0, st] = sum(a.kernel_sizes[j] for j in active) / (7.0 * len(active))
            block[1, st] = sum(a.expand_ratios[j] for j in active) / (6.0 * len(active))
            block[2, st] = a.depths[st] / 4.0
    return out.reshape(len(archs), -1)


def predictor_features(space: SearchSpace, archs: Sequence[ArchConfig], num_classes: int) -> np.ndarray:
    """What the predictor sees: `onehot_features`, `cost_features` and `resolution_stage_features`."""
    return np.concatenate([onehot_features(space, archs), cost_features(space, archs, num_classes),
                           resolution_stage_features(space, archs)], axis=1)


# ----- the model -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AccuracyPredictor:
    """Ensemble of MLPs (ReLU) averaged with a ridge regression, predicting accuracy 0..1 from
    `predictor_features`. Call it on a batch of archs."""

    space: SearchSpace
    layers: tuple[tuple[tuple[np.ndarray, np.ndarray], ...], ...]  # per MLP member: ((W, b), ...)
    target_mean: float
    target_std: float
    num_classes: int = 10
    linear: tuple[np.ndarray, np.ndarray] | None = None  # ridge (W (F, 1), b (1,)) on standardised targets
    linear_weight: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __call__(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        return self.predict_features(predictor_features(self.space, archs, self.num_classes))

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        outs = []
        for member in self.layers:
            h = x
            for i, (w, b) in enumerate(member):
                h = h @ w + b
                if i < len(member) - 1:
                    np.maximum(h, 0.0, out=h)
            outs.append(h[:, 0])
        y = np.mean(outs, axis=0)
        if self.linear is not None:
            y = (1 - self.linear_weight) * y + self.linear_weight * (x @ self.linear[0] + self.linear[1])[:, 0]
        return y * self.target_std + self.target_mean

    @property
    def spearman(self) -> float | None:
        return self.meta.get("holdout_spearman")

    def save(self, path: Path) -> None:
        import torch

        from factory.run import atomic_torch_save

        blob = {
            "version": PREDICTOR_VERSION,
            "space": {"name": self.space.name, "phi": self.space.spec.phi, "sampling": self.space.sampling},
            "layers": [[(torch.from_numpy(w), torch.from_numpy(b)) for w, b in m] for m in self.layers],
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "num_classes": self.num_classes,
            "linear": None if self.linear is None else tuple(torch.from_numpy(a) for a in self.linear),
            "linear_weight": self.linear_weight,
            "meta": self.meta,
        }
        atomic_torch_save(blob, path)


def load_predictor(run_dir: Path, space: SearchSpace, checkpoint_sha256: str | None = None) -> AccuracyPredictor | None:
    """The run's predictor, or None when `predictor.pt` is absent. A predictor fitted on another
    space or another supernet checkpoint is an error (it would predict for a different network)."""
    import torch

    path = Path(run_dir) / PREDICTOR_FILE
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise UserInputError(f"{path}: not a readable predictor file ({exc}); refit with "
                             f"`factory predictor fit --run {run_dir}`") from None
    if blob.get("version") != PREDICTOR_VERSION:
        raise UserInputError(f"{path}: version {blob.get('version')!r}, expected {PREDICTOR_VERSION}; refit it")
    sp = blob["space"]
    if (sp["name"], float(sp["phi"]), sp["sampling"]) != (space.name, float(space.spec.phi), space.sampling):
        raise UserInputError(f"{path}: fitted for space {sp}, but the run's space is "
                             f"{space.name!r} phi={space.spec.phi} sampling={space.sampling!r}; refit it")
    meta = dict(blob.get("meta", {}))
    if checkpoint_sha256 and meta.get("checkpoint_sha256") not in (None, checkpoint_sha256):
        raise UserInputError(f"{path}: fitted on another supernet checkpoint (sha256 "
                             f"{str(meta.get('checkpoint_sha256'))[:12]}…, run has {checkpoint_sha256[:12]}…); "
                             f"refit with `factory predictor fit --run {run_dir}`")
    layers = tuple(tuple((w.numpy().astype(np.float32), b.numpy().astype(np.float32)) for w, b in m)
                   for m in blob["layers"])
    linear = None if blob.get("linear") is None else tuple(t.numpy().astype(np.float32) for t in blob["linear"])
    return AccuracyPredictor(space, layers, float(blob["target_mean"]), float(blob["target_std"]),
                             int(blob.get("num_classes", 10)), linear, float(blob.get("linear_weight", 0.5)),
                             meta)


@dataclass(frozen=True)
class FitConfig:
    """Chosen by held-out Spearman on measured sub-networks of a briefly trained run: with ~150 samples
    strong weight decay matters most (1e-4 over 1500 epochs overfit: 0.54 vs 0.63 at 1e-2 / 500)."""

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
    import torch

    if len(archs) < 4:
        raise UserInputError(f"predictor: need at least 4 measured sub-networks to fit, got {len(archs)}")
    feats = predictor_features(space, archs, num_classes)
    x = torch.from_numpy(feats)
    y = torch.tensor(list(targets), dtype=torch.float32)
    mean = float(y.mean())
    std = float(y.std()) if len(y) > 1 and float(y.std()) > 1e-8 else 1.0
    yn = (y - mean) / std
    gen = torch.Generator().manual_seed(seed)
    members = []
    sizes = [x.shape[1]] + [config.hidden] * config.depth + [1]
    for _ in range(config.ensemble):
        params = []
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
        members.append(tuple((w.detach().numpy().copy(), b.detach().numpy().copy()) for w, b in params))
    return AccuracyPredictor(space, tuple(members), mean, std, num_classes,
                             _ridge(feats.astype(np.float64), yn.numpy().astype(np.float64), config.ridge),
                             config.ridge_weight)


def _ridge(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept, as a linear layer (W (F, 1), b (1,))."""
    xm, ym = x.mean(0), y.mean()
    a = x - xm
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ (y - ym))
    return w[:, None].astype(np.float32), np.array([ym - xm @ w], dtype=np.float32)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


# ----- sampling and measuring ----------------------------------------------------------------------
def stratified_archs(space: SearchSpace, n: int, rng: random.Random, num_classes: int = 10,
                     size_bins: int = 3) -> list[ArchConfig]:
    """`n` distinct canonical sub-networks, round-robin over (resolution, MACs bin) cells so every
    resolution and every size range is covered equally. Deterministic for a given `rng` state."""
    # The pool size does not depend on n (up to 500), so a smaller --samples is a prefix of a larger
    # one: a fit can stop early and reuse every measurement.
    pool = list(dict.fromkeys(space.canonical(space.sample(rng)) for _ in range(max(5000, 10 * n))))
    cells: list[list[ArchConfig]] = []
    for res in space.resolutions:
        members = sorted((a for a in pool if a.resolution == res), key=lambda a: cost(space, a, num_classes).macs)
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
class Sample:
    arch: ArchConfig
    accuracy: float
    loss: float
    images: int
    seconds: float
    checkpoint_sha256: str

    def to_json(self) -> str:
        return json.dumps({"arch": self.arch.to_dict(), "accuracy": self.accuracy, "loss": self.loss,
                           "images": self.images, "seconds": round(self.seconds, 3),
                           "checkpoint_sha256": self.checkpoint_sha256})


def read_samples(path: Path, space: SearchSpace, checkpoint_sha256: str,
                 images: int | None = None) -> dict[ArchConfig, Sample]:
    """Measured samples of this checkpoint (keyed by canonical arch) on `images` validation images (any
    when None); lines of other checkpoints or validation subsets and a torn last line are skipped."""
    out: dict[ArchConfig, Sample] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
            arch = space.canonical(ArchConfig.from_dict(d["arch"]))
            sample = Sample(arch, float(d["accuracy"]), float(d["loss"]), int(d["images"]), float(d["seconds"]),
                            str(d["checkpoint_sha256"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if sample.checkpoint_sha256 == checkpoint_sha256 and images in (None, sample.images):
            out[arch] = sample
    return out


def measure_samples(
    archs: Sequence[ArchConfig],
    measure: Callable[[ArchConfig], tuple[float, float, int]],
    path: Path,
    space: SearchSpace,
    checkpoint_sha256: str,
    progress: bool = True,
    images: int | None = None,
) -> list[Sample]:
    """Measure every arch not yet in `path` (append one JSON line each, flushed), return all of `archs`."""
    from tqdm import tqdm

    done = read_samples(path, space, checkpoint_sha256, images)
    todo = [a for a in archs if a not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    with path.open("a") as fh, tqdm(total=len(archs), initial=len(archs) - len(todo), disable=not progress,
                                     desc="measuring sub-networks", unit="net") as bar:
        if torn:  # an interrupted write: end that line so the next record is not glued to it
            fh.write("\n")
        for arch in todo:
            t0 = time.perf_counter()
            acc, loss, images = measure(arch)
            sample = Sample(arch, acc, loss, images, time.perf_counter() - t0, checkpoint_sha256)
            fh.write(sample.to_json() + "\n")
            fh.flush()
            done[arch] = sample
            bar.update(1)
    return [done[a] for a in archs]


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


def fit_predictor(
    run_dir: str | Path,
    samples: int = 400,
    holdout: int = 50,
    seed: int = 0,
    val_images: int | None = None,
    progress: bool = True,
    config: FitConfig = FitConfig(),
    uniform: bool = True,
) -> FitReport:
    """`factory predictor fit`: sample, measure (resumable), fit, store predictor.pt in the run.

    With `uniform`, the space's uniformly scaled sub-networks are measured too and join the training
    set (the held-out set stays random, stratified sub-networks): the search's verification then
    knows their real accuracy, so a pick can never lose to a hand-scaled network that was measured."""
    from factory.evaluate import evaluate_on
    from factory.run import load_run

    if samples < holdout + 10:
        raise UserInputError(f"--samples: {samples} leaves fewer than 10 training samples after "
                             f"{holdout} held out; use at least {holdout + 10}")
    run = load_run(run_dir)
    space = run.space
    archs = stratified_archs(space, samples, random.Random(seed), run.num_classes)
    ds = run.dataset()
    val = ds.val if val_images is None or val_images >= len(ds.val) else _subset(ds.val, val_images, seed)
    net = run.supernet

    def measure(arch: ArchConfig) -> tuple[float, float, int]:
        r = evaluate_on(net, arch, ds.calib, val, run.mean, run.std)
        return r.accuracy, r.loss, r.images

    t0 = time.perf_counter()
    grid = []
    if uniform:
        seen = set(archs)
        grid = [a for a in dict.fromkeys(space.canonical(a) for a in space.uniform_grid()) if a not in seen]
    every = measure_samples(archs + grid, measure, run.path / SAMPLES_FILE, space, run.checkpoint_sha256, progress,
                            images=len(val))
    measured, extra = every[: len(archs)], every[len(archs):]
    t1 = time.perf_counter()
    train_idx, held_idx = split_holdout(len(measured), holdout)
    tr = [measured[i] for i in train_idx] + extra
    ho = [measured[i] for i in held_idx]
    model = fit_mlp(space, [s.arch for s in tr], [s.accuracy for s in tr], seed, config, run.num_classes)
    pred = model([s.arch for s in ho])
    truth = [s.accuracy for s in ho]
    rho = spearman(pred, truth)
    macs_rho = spearman([cost(space, s.arch, run.num_classes).macs for s in ho], truth)
    mae = float(np.mean(np.abs(np.asarray(pred) - np.asarray(truth))))
    t2 = time.perf_counter()
    meta = {"holdout_spearman": rho, "macs_spearman": macs_rho, "holdout_mae": mae, "train": len(tr),
            "holdout": len(ho), "seed": seed, "val_images": len(val), "checkpoint_sha256": run.checkpoint_sha256,
            "config": config.__dict__}
    model = replace(model, meta=meta)
    out = run.path / PREDICTOR_FILE
    model.save(out)
    accs = [s.accuracy for s in measured + extra]
    return FitReport(out, len(measured) + len(extra), len(tr), len(ho), rho, macs_rho, mae, (min(accs), max(accs)),
                     t1 - t0, t2 - t1, len(val), len(extra))


def _subset(split: Any, n: int, seed: int) -> Any:
    """A fixed random subset of a split (same for every sub-network, so rankings stay comparable)."""
    import torch

    from factory.data import Split

    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return Split(split.images[idx], split.labels[idx])
