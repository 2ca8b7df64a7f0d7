"""What `factory search` writes (pareto.json, pareto.png, pick.json) and how `--arch` reads an arch back.

`--out` of `factory search` is a folder (the three files go in it, default RUN/search/TARGET/) or a
path ending in .json: the pick is written there and the front next to it as <stem>.pareto.json and
<stem>.pareto.png. A pick file holds the arch in our format ("arch") and in MIT Once-for-All's
("ofa_arch") with the target and the predicted and measured figures, so `factory export --arch
pick.json` takes it as it is. Every `--arch` accepts a plain arch JSON in either format, a pick.json,
or a pareto.json (its "chosen" entry).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.errors import UserInputError, parse_text_file
from supernets.arch import OFA_KEYS, ArchConfig, is_ofa_dict, unwrap_arch

if TYPE_CHECKING:
    from factory.search.engine import Candidate, SearchResult
    from supernets.space import SearchSpace

SEARCH_DIR = "search"
ARCH_FILE_KINDS = ("an arch (keys resolution, depths, kernel_sizes, expand_ratios), an arch in MIT "
                   "Once-for-All's format (keys ks, e, d, r), a pick.json of `factory search` (key 'arch') or a "
                   "pareto.json (key 'chosen')")


@dataclass(frozen=True)
class SearchFiles:
    """Where one search writes its front (JSON + plot) and its pick."""

    pareto_json: Path
    pareto_png: Path
    pick_json: Path

    @classmethod
    def at(cls, out: Path | None, run_dir: Path, target: str) -> SearchFiles:
        """`out` = a folder, a .json path for the pick, or None (RUN/search/TARGET/)."""
        if out is not None and Path(out).suffix == ".json":
            out = Path(out)
            return cls(out.with_name(f"{out.stem}.pareto.json"), out.with_name(f"{out.stem}.pareto.png"), out)
        folder = Path(out) if out is not None else Path(run_dir) / SEARCH_DIR / target
        return cls(folder / "pareto.json", folder / "pareto.png", folder / "pick.json")


def write_search_files(result: SearchResult, files: SearchFiles, target: str, info: dict[str, Any],
                       baselines: Sequence[tuple[Candidate, float]] = ()) -> None:
    """pareto.json and pick.json (atomic) and pareto.png. Without a pick (infeasible target) an older
    pick.json at that place is removed, so it cannot be mistaken for this search's."""
    from exports.files import atomic_write_text
    from factory.search.plot import plot_pareto

    files.pareto_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(files.pareto_json, json.dumps({**info, **result.to_dict()}, indent=1) + "\n")
    plot_pareto(result, files.pareto_png, f"{target}: budgets {result.budgets.to_dict() or 'none'}", baselines)
    if result.chosen is None:
        files.pick_json.unlink(missing_ok=True)
        return
    c = result.chosen
    pick = {"arch": c.arch.to_dict(), "ofa_arch": c.arch.to_ofa_dict(), "target": info.get("target"),
            "predicted": c.predicted.to_dict(), "measured": None if c.measured is None else c.measured.to_dict(),
            "verified": c.passes_measured, "run": info.get("run"), "checkpoint_sha256": info.get("checkpoint_sha256"),
            "seed": result.seed, "pareto": files.pareto_json.name}
    atomic_write_text(files.pick_json, json.dumps(pick, indent=1) + "\n")


def read_arch_file(path: str | Path) -> ArchConfig:
    """The arch in a plain arch JSON (our format or OFA's), a pick.json (its "arch") or a pareto.json (its
    "chosen" pick); UserInputError naming the file and the expected keys otherwise."""
    return _parse_arch(path, _arch_data(path))


def _arch_data(path: str | Path) -> dict[str, Any]:
    """The arch object of an arch file (either format), not yet checked field by field."""
    data = parse_text_file(Path(path), json.loads, "JSON", "no such file")
    if isinstance(data, dict) and "arch" not in data and "chosen" in data:
        if not isinstance(data["chosen"], dict):
            raise UserInputError(f"{path}: a pareto.json without a pick ('chosen' is null: the target was "
                                 f"infeasible); give {ARCH_FILE_KINDS}")
        data = data["chosen"]
    data = unwrap_arch(data)
    if not isinstance(data, dict) or not set(data) & {*OFA_KEYS, *OFA_KEYS.values()}:
        raise UserInputError(f"{path}: not an arch file; expected {ARCH_FILE_KINDS}")
    return data


def _parse_arch(path: str | Path, data: dict[str, Any]) -> ArchConfig:
    try:
        return ArchConfig.parse(data)
    except ValueError as exc:
        raise UserInputError(f"{path}: {exc}") from None


def arch_from_option(space: SearchSpace, value: str) -> ArchConfig:
    """`max` | `min` | an arch file (`read_arch_file`) -> an ArchConfig of `space` (UserInputError otherwise)."""
    if value == "max":
        return space.largest()
    if value == "min":
        return space.smallest()
    data = _arch_data(value)
    arch = _parse_arch(value, data)
    try:
        space.validate(arch)
    except ValueError as exc:
        field = str(exc).split(":")[0].split("[")[0]
        ofa = f" (OFA key {OFA_KEYS[field]!r})" if field in OFA_KEYS and is_ofa_dict(data) else ""
        raise UserInputError(f"--arch {value}: {exc}{ofa} (allowed: max, min, or {ARCH_FILE_KINDS})") from None
    return arch
