"""A run folder: what `factory train` writes and every later command reads.

    runs/<name>/ config.toml · data.json · supernet.pt · checkpoints/last.pt · metrics.jsonl · summary.json

`load_run` is the one reader; the writers here are used by the trainer (rank 0 only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exports.files import atomic_write_text, atomic_writer, sha256_file
from factory.errors import UserInputError, parse_text_file
from supernets.space import space_from_record, space_record

if TYPE_CHECKING:
    from factory.data import DataInfo, Dataset
    from supernets import SearchSpace, Supernet

CONFIG_FILE = "config.toml"
DATA_FILE = "data.json"
SUPERNET_FILE = "supernet.pt"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoints"
SUPERNET_FORMAT = "ofa-factory-supernet"
SUPERNET_VERSION = 1


@dataclass
class Run:
    """A trained run, loaded for evaluation, search and export. The supernet is on CPU in eval mode."""

    path: Path
    space: SearchSpace
    supernet: Supernet
    checkpoint_sha256: str
    data: DataInfo  # data.json: how to rebuild the split, how to preprocess
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def num_classes(self) -> int:
        return self.supernet.num_classes

    @property
    def class_names(self) -> list[str]:
        return self.data.class_names

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.data.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.data.std

    def dataset(self) -> Dataset:
        """The same train/val/calib split training used (loaded once per Run)."""
        if self._dataset is None:
            self._dataset = self.data.load()
        return self._dataset


def load_run(path: str | Path) -> Run:
    """Read a run folder; UserInputError naming the file when something is missing or corrupt."""
    from factory.data import DataInfo
    from supernets import Supernet

    root = Path(path)
    if not root.is_dir():
        raise UserInputError(f"run: {root}: no such folder (train one with `factory train --out {root}`)")
    data = DataInfo.from_dict(_read_json(root / DATA_FILE), origin=str(root / DATA_FILE))
    blob = read_supernet_file(root / SUPERNET_FILE)
    sp = blob["space"]
    try:
        space = space_from_record(sp)
        net = Supernet(space, int(blob["num_classes"]), dropout=float(blob.get("dropout", 0.1)))
        net.load_state_dict(blob["state_dict"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise UserInputError(f"{root / SUPERNET_FILE}: does not match its recorded space ({exc})") from None
    net.eval()
    if data.num_classes != net.num_classes:
        raise UserInputError(
            f"{root / DATA_FILE}: {data.num_classes} class names but the supernet has {net.num_classes} outputs"
        )
    return Run(path=root, space=space, supernet=net, checkpoint_sha256=sha256_file(root / SUPERNET_FILE), data=data)


def _read_json(path: Path) -> dict[str, Any]:
    data = parse_text_file(path, json.loads, "JSON", "missing (is this a run folder written by `factory train`?)")
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a JSON object")
    return data


def read_supernet_file(path: Path) -> dict[str, Any]:
    return load_tagged_torch_file(path, "supernet", "supernet file", SUPERNET_FORMAT, SUPERNET_VERSION)


def load_tagged_torch_file(path: Path, what: str, kind: str, fmt: str, version: int) -> dict[str, Any]:
    """`load_torch_file`, then check the format tag and version this tool writes into its own files."""
    blob = load_torch_file(path, what=what)
    if blob.get("format") != fmt:
        raise UserInputError(f"{path}: not an ofa-factory {kind} (format {blob.get('format')!r})")
    if blob.get("version") != version:
        raise UserInputError(f"{path}: {kind} version {blob.get('version')!r}; this tool reads {version}")
    return blob


def load_torch_file(path: Path, what: str) -> dict[str, Any]:
    """torch.load(weights_only=True) with errors that name the file (truncated, foreign, missing)."""
    import pickle
    import zipfile

    import torch

    if not path.is_file():
        raise UserInputError(f"{path}: missing {what} file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserInputError(f"{path}: cannot read {what} file, truncated or not a PyTorch file ({exc})") from None
    if not isinstance(blob, dict):
        raise UserInputError(f"{path}: not an ofa-factory {what} file (holds a {type(blob).__name__})")
    return blob


def atomic_torch_save(obj: Any, path: Path) -> None:
    """`torch.save` through `exports.files.atomic_writer`: a crash leaves the old file."""
    import torch

    with atomic_writer(path) as f:
        torch.save(obj, f)


def save_supernet(net: Supernet, space: SearchSpace, path: Path) -> None:
    """supernet.pt: the weights plus what is needed to rebuild the module (space, classes, dropout)."""
    dropout = float(net.head.dropout.p) if hasattr(net.head, "dropout") else 0.1
    blob = {
        "format": SUPERNET_FORMAT,
        "version": SUPERNET_VERSION,
        "space": space_record(space),
        "num_classes": net.num_classes,
        "dropout": dropout,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
    }
    atomic_torch_save(blob, path)


def write_data_json(path: Path, dataset: Dataset) -> None:
    atomic_write_text(path, json.dumps(dataset.describe(), indent=2) + "\n")
