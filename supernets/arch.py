"""ArchConfig: one sub-network as frozen, JSON-able data with full field names.

It also reads and writes MIT Once-for-All's format (what OFA's evolution finder and its published net
configs use): `{"ks": [...], "e": [...], "d": [...], "r": [R]}`, one to one with our fields
(`OFA_KEYS`); slots past a stage's depth are kept in both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_FIELDS = ("resolution", "depths", "kernel_sizes", "expand_ratios")
OFA_KEYS = {"kernel_sizes": "ks", "expand_ratios": "e", "depths": "d", "resolution": "r"}  # our field -> OFA key
_OFA_ORDER = tuple(OFA_KEYS.values())


def _int_list(key: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{key}: expected a list of integers, got {value!r}")
    return tuple(value)


def _check_keys(data: Any, keys: tuple[str, ...], what: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a JSON object with keys {list(keys)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; allowed: {list(keys)}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{what}: missing key(s) {missing}")


def is_ofa_dict(data: Any) -> bool:
    """True for an object with OFA keys (ks, e, d, r) and none of ours."""
    return isinstance(data, dict) and bool(set(data) & set(_OFA_ORDER)) and not set(data) & set(_FIELDS)


def unwrap_arch(data: Any) -> Any:
    """The arch inside a JSON document: its "arch" object, else its "ofa_arch" object, else the document."""
    if isinstance(data, dict):
        for key in ("arch", "ofa_arch"):
            if isinstance(data.get(key), dict):
                return data[key]
    return data


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
        _check_keys(data, _FIELDS, "arch")
        res = data["resolution"]
        if isinstance(res, bool) or not isinstance(res, int):
            raise ValueError(f"resolution: expected an integer, got {res!r}")
        return cls(resolution=res, **{key: _int_list(key, data[key]) for key in _FIELDS[1:]})

    def to_ofa_dict(self) -> dict[str, list[int]]:
        """OFA's format: {"ks": kernel_sizes, "e": expand_ratios, "d": depths, "r": [resolution]}."""
        return {"ks": list(self.kernel_sizes), "e": list(self.expand_ratios), "d": list(self.depths),
                "r": [self.resolution]}

    @classmethod
    def from_ofa_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """OFA's format, exactly the keys ks, e, d, r; r is [R] or R."""
        _check_keys(data, _OFA_ORDER, "arch (OFA format)")
        r = data["r"]
        res = r[0] if isinstance(r, list | tuple) and len(r) == 1 else r
        if isinstance(res, bool) or not isinstance(res, int):
            raise ValueError(f"r: expected the resolution as [R] or R (an integer), got {r!r}")
        return cls(resolution=res, depths=_int_list("d", data["d"]), kernel_sizes=_int_list("ks", data["ks"]),
                   expand_ratios=_int_list("e", data["e"]))

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ArchConfig:
        """Our format or OFA's, told apart by the keys (`is_ofa_dict`); mixing the two is refused."""
        if is_ofa_dict(data):
            return cls.from_ofa_dict(data)
        if isinstance(data, dict) and set(data) & set(_OFA_ORDER):
            raise ValueError(f"arch: mixes OFA keys {sorted(set(data) & set(_OFA_ORDER))} with ours "
                             f"{sorted(set(data) & set(_FIELDS))}; give either {list(_FIELDS)} or {list(_OFA_ORDER)}")
        return cls.from_dict(data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> ArchConfig:
        """Read an arch JSON file in our format or OFA's; accepts a bare arch or an object with an
        `arch` (or `ofa_arch`) key."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        try:
            return cls.parse(unwrap_arch(data))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
