"""Measuring many sub-networks in a row, computing what consecutive ones share only once.

The predictor measures hundreds of sub-networks (BN recalibration on the calib split, then accuracy on the
validation split). Two sub-networks with the same resolution and the same first blocks compute the same
activations up to the first block where they differ, in recalibration (train-mode BN normalises with batch
statistics, so a block's output depends only on the blocks before it) and in evaluation (the recalibrated
statistics of those blocks are equal too). So the archs are measured in prefix order, and the activations
and BN statistics at every block boundary of the previous sub-network are kept; the next one starts from the
deepest boundary it shares. Results are those of `factory.evaluate.evaluate_on` (the same chunks, the same
per-layer update order), which the tests pin; the saving is the stem, the first block and the first blocks of
stage 1, the widest maps of the network (docs/decisions.md 2026-12-01).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from factory.data import Split
from factory.evaluate import (
    DEFAULT_BATCH,
    EvalResult,
    accumulating_bn,
    bn_modules,
    equal_chunks,
    eval_device,
    evaluate_on,
    model_inputs,
    preserved_bn_stats,
    rank_chunks,
    scored,
)
from supernets import ArchConfig, Supernet

if TYPE_CHECKING:
    from factory.training.distributed import DistContext

KEPT_BYTES = 512 * 2**20  # activations kept along the path (a 224-px space keeps only its narrow boundaries)


def prefix_order(archs: Sequence[ArchConfig], space_slots: Callable[[int], range]) -> list[ArchConfig]:
    """`archs` sorted so that sub-networks sharing a resolution and first blocks come one after another."""
    return sorted(archs, key=lambda a: (a.resolution, _units(a, space_slots)))


def _units(arch: ArchConfig, stage_slots: Callable[[int], range]) -> tuple[tuple[int, int, int, int], ...]:
    return tuple((st, pos, arch.kernel_sizes[slot], arch.expand_ratios[slot])
                 for st, depth in enumerate(arch.depths) for pos, slot in enumerate(list(stage_slots(st))[:depth]))


_Unit = tuple[tuple, nn.Module | None, Callable[[torch.Tensor], torch.Tensor]]  # key, module (None: stem), fn


@dataclass
class _Boundary:
    """After one unit of the last sub-network: its key and its outputs (calibration chunks in train mode,
    this rank's validation batches in eval mode with the recalibrated statistics), or None when they were too
    big to keep. The unit's BN statistics need no keeping: a unit is either skipped or recalibrated again."""

    key: tuple
    calib: list[torch.Tensor] | None
    val: list[torch.Tensor] | None


class SharedPrefixEvaluator:
    """`evaluate_on(net, arch, calib, val, ...)` for one arch after another, reusing the shared prefix.

    Only the first SHARED_UNITS units are kept (the stem with the first block, then stage 1's first block:
    the widest maps, a third of a 20-px sub-network's forward); the rest runs batch by batch as in
    evaluate_on. Keeping every block boundary was slower than it saved (docs/decisions.md)."""

    SHARED_UNITS = 2

    def __init__(self, net: Supernet, calib: Split, val: Split, mean: Sequence[float], std: Sequence[float],
                 device: str | torch.device = "cpu", batch_size: int = DEFAULT_BATCH,
                 ctx: DistContext | None = None, kept_bytes: int = KEPT_BYTES) -> None:
        self.net, self.calib, self.val, self.mean, self.std = net, calib, val, mean, std
        self.device, self.batch_size, self.ctx, self.kept_bytes = eval_device(device), batch_size, ctx, kept_bytes
        self._calib_chunks = equal_chunks(len(calib), batch_size)  # the chunks recalibrate_bn uses
        self._val_chunks = rank_chunks(len(val), batch_size, ctx)  # the batches evaluate_on gives this rank
        self._path: list[_Boundary] = []
        self.units_computed = 0  # shared units run (stem + first block, or stage 1's first block), for tests

    def order(self, archs: Sequence[ArchConfig]) -> list[ArchConfig]:
        return prefix_order(archs, self.net.space.stage_slots)

    @torch.no_grad()
    def __call__(self, arch: ArchConfig) -> EvalResult:
        net = self.net
        images = len(self.calib) + len(self.val)  # the same on every rank: all ranks take the same branch
        if images * net.space.spec.in_channels * arch.resolution**2 * 4 > self.kept_bytes:
            # this works on whole splits at once; a split this big (224-px folders) streams batch by batch instead
            return evaluate_on(net, arch, self.calib, self.val, self.mean, self.std, self.device, self.batch_size,
                               self.ctx)
        blocks = _units(arch, net.space.stage_slots)
        first = net.stages[blocks[0][0]][blocks[0][1]]
        units: list[_Unit] = [(("stem", arch.resolution), None, lambda x: net.first_block(net.stem(x))),
                              (blocks[0], first, first)][: self.SHARED_UNITS]
        keys, key = [], ()
        for unit_key, _, _ in units:
            key = (*key, unit_key)
            keys.append(key)
        shared = 0
        while shared < min(len(self._path), len(keys)) and self._path[shared].key == keys[shared]:
            shared += 1
        del self._path[shared:]
        start = shared
        while start > 0 and self._path[start - 1].calib is None:  # resume from the deepest kept activations
            start -= 1
        rest = [net.stages[st][pos] for st, pos, _, _ in blocks[len(units) - 1:]]
        was_training = net.training
        bn_of_unit = [bn_modules(module) if module is not None else bn_modules(net.stem) + bn_modules(net.first_block)
                      for _, module, _ in units]
        with preserved_bn_stats(net), net.activated(arch):
            net.eval()
            if start:
                calib_x = list(self._path[start - 1].calib or [])
                val_x = list(self._path[start - 1].val or [])
            else:
                r, mean, std, dev = arch.resolution, self.mean, self.std, self.device
                calib_x = list(model_inputs(self.calib.images, self._calib_chunks, r, mean, std, dev))
                val_x = list(model_inputs(self.val.images, self._val_chunks, r, mean, std, dev))
            for i in range(start, len(units)):
                calib_x = self._recalibrate(bn_of_unit[i], units[i][2], calib_x)
                val_x = [units[i][2](x) for x in val_x]
                self.units_computed += 1
                if i >= shared:
                    self._keep(keys[i], calib_x, val_x)

            def suffix(x: torch.Tensor) -> torch.Tensor:
                for block in rest:
                    x = block(x)
                return net.forward_head(x)

            self._recalibrate([m for b in [*rest, net.head] for m in bn_modules(b)], suffix, calib_x)
            batches = zip(val_x, self._val_chunks, strict=True)
            result = scored(((suffix(x), self.val.labels[part]) for x, part in batches), arch, len(self.val), self.ctx)
        net.train(was_training)
        return result

    # ----- helpers --------------------------------------------------------------------------------------
    @staticmethod
    def _recalibrate(bns: list[nn.Module], fn: Callable[[torch.Tensor], torch.Tensor],
                     chunks: list[torch.Tensor]) -> list[torch.Tensor]:
        """`bns` recalibrated over `chunks` (as recalibrate_bn does), the unit's outputs returned."""
        with accumulating_bn(bns):
            return [fn(x) for x in chunks]

    def _keep(self, key: tuple, calib_x: list[torch.Tensor], val_x: list[torch.Tensor]) -> None:
        used = sum(self._bytes(b.calib) + self._bytes(b.val) for b in self._path)
        keep = used + self._bytes(calib_x) + self._bytes(val_x) <= self.kept_bytes
        self._path.append(_Boundary(key, calib_x if keep else None, val_x if keep else None))

    @staticmethod
    def _bytes(tensors: list[torch.Tensor] | None) -> int:
        return sum(t.numel() * t.element_size() for t in tensors or [])
