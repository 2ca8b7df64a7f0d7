"""The accuracy predictor: an ensemble of small MLPs plus a ridge member on `predictor_features`.

Why a predictor: measuring one sub-network (BN recalibration + validation) takes about a second, and a
search ranks ~10^4 candidates. Prediction is a numpy forward over a whole batch, so the search loop runs
without torch and the model pickles into a process pool; torch is imported only to read and write
`predictor.pt`. Fitting is `factory.predictor.fit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from factory.errors import UserInputError
from factory.predictor.features import predictor_features
from factory.run import atomic_torch_save
from supernets.arch import ArchConfig
from supernets.space import SearchSpace, space_record

PREDICTOR_FILE = "predictor.pt"
PREDICTOR_VERSION = 3  # 2: cost features + ridge member; 3: resolution x stage interaction features


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
        import torch  # only for the file: predicting stays numpy-only (cheap to import in a process pool)

        blob = {
            "version": PREDICTOR_VERSION,
            "space": space_record(self.space),
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
    import torch  # not at module level: see AccuracyPredictor.save

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
    if {**sp, "width": float(sp.get("width", 1.0))} != space_record(space):
        raise UserInputError(f"{path}: fitted for space {sp}, but the run's space is {space_record(space)}; refit it")
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
