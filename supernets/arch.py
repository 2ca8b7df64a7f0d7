"""ArchConfig: one sub-network as frozen, JSON-able data with full field names."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_FIELDS = ("resolution", "depths", "kernel_sizes", "expand_ratios")


@dataclass(frozen=True)
class ArchConfig:
    """A sub-network: input resolution, depth per stage, kernel and expand ratio per block slot.

    Slots past a stage's active depth are kept (the genome has fixed length) but do not run.
    """

    resolution: int
    depths: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    expand_ratios: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        if not isinstance(data, dict):
            raise ValueError(f"arch: expected a JSON object with keys {list(_FIELDS)}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"arch: unknown key(s) {unknown}; allowed: {list(_FIELDS)}")
        missing = [k for k in _FIELDS if k not in data]
        if missing:
            raise ValueError(f"arch: missing key(s) {missing}")
        res = data["resolution"]
        if isinstance(res, bool) or not isinstance(res, int):
            raise ValueError(f"resolution: expected an integer, got {res!r}")
        seqs = {}
        for key in _FIELDS[1:]:
            value = data[key]
            if not isinstance(value, list | tuple) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise ValueError(f"{key}: expected a list of integers, got {value!r}")
            seqs[key] = tuple(value)
        return cls(resolution=res, **seqs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ArchConfig:
        """Read an arch JSON file; accepts a bare arch or an object with an `arch` key."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict) and "arch" in data and isinstance(data["arch"], dict):
            data = data["arch"]
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
