"""The accuracy predictor: gradient-boosted regression trees on `predictor_features`.

Why a predictor: measuring one sub-network (BN recalibration + validation) takes about a second, and a
search ranks ~10^4 candidates. Prediction is a numpy walk down every tree for a whole batch at once, so
the search loop runs without torch and the model pickles into a process pool; torch is imported only to
read and write `predictor.pt`. Fitting is `factory.predictor.fit`.
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
# 2: cost features + ridge member; 3: resolution x stage features; 4: boosted trees (MLPs and ridge gone),
# resolution x block features
PREDICTOR_VERSION = 4


@dataclass(frozen=True)
class AccuracyPredictor:
    """Boosted regression trees predicting accuracy 0..1 from `predictor_features`; call it on a batch of
    archs. Every tree is complete, of one depth, in heap order (node i has children 2i+1 and 2i+2); a
    node that does not split has threshold +inf (everything goes left)."""

    space: SearchSpace
    feature: np.ndarray  # (trees, 2^depth - 1) int32: the feature column each inner node tests
    threshold: np.ndarray  # (trees, 2^depth - 1) float32: go right when feature > threshold
    leaf: np.ndarray  # (trees, 2^depth) float32: leaf values on standardised targets, learning rate applied
    target_mean: float
    target_std: float
    num_classes: int = 10
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __call__(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        return self.predict_features(predictor_features(self.space, archs, self.num_classes))

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        return tree_sum(self.feature, self.threshold, self.leaf, x) * self.target_std + self.target_mean

    @property
    def spearman(self) -> float | None:
        return self.meta.get("holdout_spearman")

    def save(self, path: Path) -> None:
        import torch  # only for the file: predicting stays numpy-only (cheap to import in a process pool)

        blob = {
            "version": PREDICTOR_VERSION,
            "space": space_record(self.space),
            "feature": torch.from_numpy(self.feature),
            "threshold": torch.from_numpy(self.threshold),
            "leaf": torch.from_numpy(self.leaf),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "num_classes": self.num_classes,
            "meta": self.meta,
        }
        atomic_torch_save(blob, path)


def tree_sum(feature: np.ndarray, threshold: np.ndarray, leaf: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(N,) float64: the sum over trees of the leaf each row of `x` (N, F) reaches; all trees at once."""
    x = np.asarray(x, dtype=np.float32)
    inner = feature.shape[1]
    trees = np.arange(feature.shape[0])[None, :]
    rows = np.arange(len(x))[:, None]
    node = np.zeros((len(x), feature.shape[0]), dtype=np.int64)
    for _ in range(int(np.log2(inner + 1))):
        node = 2 * node + 1 + (x[rows, feature[trees, node]] > threshold[trees, node])
    return leaf[trees, node - inner].sum(1, dtype=np.float64)


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
        raise UserInputError(f"{path}: predictor file version {blob.get('version')!r}; this tool reads version "
                             f"{PREDICTOR_VERSION} (boosted trees); refit with `factory predictor fit --run {run_dir}` "
                             f"(sub-networks already measured in the run are reused, only the fit reruns)")
    sp = blob["space"]
    if {**sp, "width": float(sp.get("width", 1.0))} != space_record(space):
        raise UserInputError(f"{path}: fitted for space {sp}, but the run's space is {space_record(space)}; refit it")
    meta = dict(blob.get("meta", {}))
    if checkpoint_sha256 and meta.get("checkpoint_sha256") not in (None, checkpoint_sha256):
        raise UserInputError(f"{path}: fitted on another supernet checkpoint (sha256 "
                             f"{str(meta.get('checkpoint_sha256'))[:12]}…, run has {checkpoint_sha256[:12]}…); "
                             f"refit with `factory predictor fit --run {run_dir}`")
    return AccuracyPredictor(space, blob["feature"].numpy().astype(np.int32),
                             blob["threshold"].numpy().astype(np.float32), blob["leaf"].numpy().astype(np.float32),
                             float(blob["target_mean"]), float(blob["target_std"]), int(blob["num_classes"]), meta)
