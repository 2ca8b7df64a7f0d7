"""The latency model a search queries: per-block lookup, size and peak-memory estimates.

`predict(arch)` is a sum of table entries. For speed (a search asks tens of thousands of times) the
table is laid out once as a numpy array indexed [resolution, slot, kernel, expand] with the
first-in-stage distinction folded in by slot, so a prediction is one fancy-index + sum over the
active slots (no dict lookups, no object creation).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from supernets.arch import ArchConfig
from supernets.cost import cost
from supernets.space import SearchSpace, space_from_record
from targets.profile import TargetProfile
from targets.size import BYTES_PER_MB
from targets.table import LatencyTable, LatencyTableError, settings_differences

# Bytes per activation element at each precision (fp16 CPU runtimes may compute in fp32; an estimate).
ACTIVATION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


def table_path(run_dir: Path, target_name: str) -> Path:
    """Where a run keeps the table of one target: runs/<run>/latency/<target>.json."""
    return Path(run_dir) / "latency" / f"{target_name}.json"


@dataclass(frozen=True)
class _Arrays:
    res_index: dict[int, int]
    kernel_index: dict[int, int]
    expand_index: dict[int, int]
    p50: np.ndarray  # [res, slot, kernel, expand]
    p95: np.ndarray
    size: np.ndarray  # bytes, [slot, kernel, expand] (resolution-independent)
    fixed50: np.ndarray  # [res]
    fixed95: np.ndarray


class LatencyModel:
    """Predicts p50/p95 latency (ms), exported size (MB) and peak memory (MB) of a sub-network."""

    def __init__(self, table: LatencyTable, space: SearchSpace, num_classes: int, precision: str) -> None:
        self.table = table
        self.space = space
        self.num_classes = num_classes
        self.precision = precision
        self._a = self._layout()
        self._stage_slot = [list(space.stage_slots(st)) for st in range(len(space.stages))]

    def _layout(self) -> _Arrays:
        from targets.blocks import block_shapes, size_block_features

        sp = self.space
        kernels = sorted({k for s in sp.stages for k in s.kernel_choices})
        expands = sorted({e for s in sp.stages for e in s.expand_choices})
        ri = {r: i for i, r in enumerate(sp.resolutions)}
        ki = {k: i for i, k in enumerate(kernels)}
        ei = {e: i for i, e in enumerate(expands)}
        shape = (len(ri), sp.num_slots, len(ki), len(ei))
        p50, p95 = np.full(shape, np.nan), np.full(shape, np.nan)
        size = np.full(shape[1:], np.nan)
        shapes = block_shapes(sp)
        coef = np.asarray(self.table.size_coef)
        for st, stage in enumerate(sp.stages):
            for pos, slot in enumerate(sp.stage_slots(st)):
                for k in stage.kernel_choices:
                    for e in stage.expand_choices:
                        for r in sp.resolutions:
                            key = (st, pos == 0, k, e, r)
                            p50[ri[r], slot, ki[k], ei[e]], p95[ri[r], slot, ki[k], ei[e]] = self.table.blocks[key]
                        block = shapes[(st, pos == 0, k, e, sp.resolutions[0])]
                        size[slot, ki[k], ei[e]] = size_block_features(block) @ coef
        fixed50 = np.array([self.table.fixed[r][0] for r in sp.resolutions])
        fixed95 = np.array([self.table.fixed[r][1] for r in sp.resolutions])
        return _Arrays(ri, ki, ei, p50, p95, size, fixed50, fixed95)

    def _index(self, arch: ArchConfig) -> tuple[int, list[int], list[int], list[int]]:
        a = self._a
        try:
            slots = [slot for st, depth in enumerate(arch.depths) for slot in self._stage_slot[st][:depth]]
            ks = [a.kernel_index[arch.kernel_sizes[s]] for s in slots]
            es = [a.expand_index[arch.expand_ratios[s]] for s in slots]
            return a.res_index[arch.resolution], slots, ks, es
        except (KeyError, IndexError, TypeError):
            self.space.validate(arch)  # raises a ValueError naming the field
            raise

    def predict(self, arch: ArchConfig) -> float:
        """Predicted median (p50) latency in ms on the target."""
        r, slots, ks, es = self._index(arch)
        return float(self._a.fixed50[r] + self._a.p50[r, slots, ks, es].sum())

    def predict_p95(self, arch: ArchConfig) -> float:
        """Predicted 95th-percentile latency in ms on the target."""
        r, slots, ks, es = self._index(arch)
        return float(self._a.fixed95[r] + self._a.p95[r, slots, ks, es].sum())

    def size_bytes(self, arch: ArchConfig) -> float:
        """Predicted size of the exported model file(s) in bytes (fitted on the probe models)."""
        _, slots, ks, es = self._index(arch)
        return float(self.table.size_coef[-1] + self._a.size[slots, ks, es].sum())

    def size_mb(self, arch: ArchConfig) -> float:
        """Predicted exported file size in MB (1 MB = 1e6 bytes)."""
        return self.size_bytes(arch) / BYTES_PER_MB

    def peak_memory_mb(self, arch: ArchConfig) -> float:
        """ESTIMATE of peak inference memory in MB: the largest set of activations alive at once
        (`supernets.cost`, batch 1, at this precision's element size) plus the weights (the
        predicted file size). Runtimes add arenas, workspaces and their own code on top; use it
        to compare sub-networks and for budgets with a margin, not as a measurement."""
        act = cost(self.space, arch, self.num_classes).peak_activation_bytes / 4 * ACTIVATION_BYTES[self.precision]
        return (act + self.size_bytes(arch)) / BYTES_PER_MB


def _space_of(table: LatencyTable) -> SearchSpace:
    try:
        return space_from_record(table.space)
    except (KeyError, ValueError) as exc:
        raise LatencyTableError(f"table space {table.space!r} is unknown here ({exc})") from None


def load_latency_model(run_dir: str | Path, profile: TargetProfile, *, space: SearchSpace | None = None,
                       num_classes: int | None = None) -> LatencyModel:
    """The latency model of `profile` for a run: runs/<run>/latency/<target>.json, or the profile's own
    `[latency] table` file when the run has none.

    Raises LatencyTableError (a ValueError) if there is no table, or if it was measured under other
    settings: runtime, precision, threads, batch; the run's space / num_classes when given; and, for
    targets measured on this machine, the CPU model and runtime version. The message names each
    difference.
    """
    path = table_path(Path(run_dir), profile.name)
    if not path.exists() and profile.latency_table is not None:
        path = profile.latency_table
    if not path.exists():
        how = (f"factory targets measure {profile.name} --run {run_dir}" if profile.measurable_here else
               f"factory targets probe {profile.name} --out DIR, run it on the device, then "
               f"factory targets import {profile.name} RESULTS.json --run {run_dir}")
        raise LatencyTableError(f"{path}: no latency table for target {profile.name!r}; make it with: {how}")
    table = LatencyTable.load(path)
    machine = None
    if profile.measurable_here:
        from targets.measure import local_machine

        machine = local_machine(profile.runtime)
    diffs = settings_differences(table, profile, space, num_classes, machine)
    if diffs:
        raise LatencyTableError(f"{path}: measured under other settings, refusing to use it: " + "; ".join(diffs)
                                + f". Re-measure with `factory targets measure {profile.name} --run RUN`"
                                  " (or re-import for a remote device).")
    return LatencyModel(table, space or _space_of(table), table.num_classes, profile.precision)


def build_latency_table(space: SearchSpace, num_classes: int, profile: TargetProfile, out_path: Path,
                        progress: bool = True, *, samples: int | None = None, seed: int = 0,
                        onnx_cache: Path | None = None) -> Path:
    """Measure `profile`'s table on this machine and write it to `out_path` (atomically). `onnx_cache`: see
    targets.probe.export_models."""
    from targets.measure import measure_table

    if not profile.measurable_here:
        raise LatencyTableError(f"target {profile.name!r} has [latency] source = 'import': its table must be "
                                f"measured on the device (factory targets probe / import), not here")
    table = measure_table(profile, space, num_classes, samples=samples, seed=seed, progress=progress,
                          onnx_cache=onnx_cache)
    return table.save(Path(out_path))
