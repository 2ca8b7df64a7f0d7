"""Cost of a sub-network from its config alone: MACs, parameters, peak activation memory.

Counted the way `torch.utils.flop_counter.FlopCounterMode` counts (conv and linear multiply-adds;
no BN, activation or pooling). Block costs are tabulated once per (space, classes); a call is then
~20 table lookups, fast enough for search.

Peak activation memory is an estimate: batch 1, fp32, the largest set of tensors alive at once
when layers run one at a time (input kept for the residual, hidden tensors, output).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from supernets.arch import ArchConfig
from supernets.space import SearchSpace, hidden_channels, se_mid_channels

BYTES_PER_ELEMENT = 4


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int
    peak_activation_bytes: int

    def to_dict(self) -> dict[str, int]:
        return {"macs": self.macs, "params": self.params, "peak_activation_bytes": self.peak_activation_bytes}


def _out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1


def _mbconv(in_ch: int, out_ch: int, hidden: int, k: int, stride: int, se: bool, hw: int) -> tuple[int, int, int]:
    """(macs, params, peak elements) of one MBConv on an hw x hw input."""
    ohw = _out(hw, stride)
    residual = stride == 1 and in_ch == out_ch
    x = in_ch * hw * hw
    macs = params = 0
    peaks = []
    if hidden != in_ch:
        macs += in_ch * hidden * hw * hw
        params += in_ch * hidden + 2 * hidden
        h1 = hidden * hw * hw
        peaks.append(x + h1)
    else:
        h1 = x
    h2 = hidden * ohw * ohw
    macs += hidden * k * k * ohw * ohw
    params += hidden * k * k + 2 * hidden
    keep = x if residual and hidden != in_ch else 0
    peaks.append(keep + h1 + h2)
    if se:
        mid = se_mid_channels(hidden)
        macs += 2 * hidden * mid
        params += 2 * hidden * mid + mid + hidden
        peaks.append(keep + 2 * h2)
    o = out_ch * ohw * ohw
    macs += hidden * out_ch * ohw * ohw
    params += hidden * out_ch + 2 * out_ch
    peaks.append((x if residual else 0) + h2 + o)
    if residual:
        peaks.append(x + 2 * o)
    return macs, params, max(peaks)


@dataclass(frozen=True)
class _Tables:
    fixed: dict[int, tuple[int, int, int]]  # resolution -> stem + first block + head
    blocks: dict[tuple[int, bool, int, int, int], tuple[int, int, int]]  # (stage, first, k, e, res)
    stage_slots: tuple[tuple[int, ...], ...]


@lru_cache(maxsize=64)
def _tables(space: SearchSpace, num_classes: int) -> _Tables:
    spec = space.spec
    fixed = {}
    blocks = {}
    for res in spec.resolutions:
        hw = _out(res, spec.stem_stride)
        stem_macs = spec.in_channels * spec.stem_channels * 9 * hw * hw
        stem_params = spec.in_channels * spec.stem_channels * 9 + 2 * spec.stem_channels
        stem_peak = spec.in_channels * res * res + spec.stem_channels * hw * hw
        fb = _mbconv(spec.stem_channels, spec.first_block_channels, spec.stem_channels, 3, 1, False, hw)
        in_ch = spec.first_block_channels
        for st, stage in enumerate(spec.stages):
            for first in (True, False):
                stride = stage.stride if first else 1
                cin = in_ch if first else stage.out_channels
                bhw = hw if first else _out(hw, stage.stride)
                for k in stage.kernel_choices:
                    for e in stage.expand_choices:
                        blocks[(st, first, k, e, res)] = _mbconv(
                            cin, stage.out_channels, hidden_channels(cin, e), k, stride, stage.use_se, bhw
                        )
            hw = _out(hw, stage.stride)
            in_ch = stage.out_channels
        f, m = spec.final_expand_channels, spec.feature_mix_channels
        head_macs = in_ch * f * hw * hw + f * m + m * num_classes
        head_params = in_ch * f + 2 * f + f * m + m * num_classes + num_classes
        head_peak = in_ch * hw * hw + f * hw * hw
        fixed[res] = (stem_macs + fb[0] + head_macs, stem_params + fb[1] + head_params,
                      max(stem_peak, fb[2], head_peak))
    stage_slots = tuple(tuple(space.stage_slots(st)) for st in range(len(spec.stages)))
    return _Tables(fixed, blocks, stage_slots)


def cost(space: SearchSpace, arch: ArchConfig, num_classes: int = 10) -> Cost:
    """MACs, params and estimated peak activation bytes of `arch` (no forward pass)."""
    tables = _tables(space, num_classes)
    blocks = tables.blocks
    ks, es, res = arch.kernel_sizes, arch.expand_ratios, arch.resolution
    try:
        macs, params, peak = tables.fixed[res]
        for st, depth in enumerate(arch.depths):
            slots = tables.stage_slots[st]
            for pos in range(depth):
                slot = slots[pos]
                m, p, pk = blocks[(st, pos == 0, ks[slot], es[slot], res)]
                macs += m
                params += p
                if pk > peak:
                    peak = pk
    except (KeyError, IndexError):
        space.validate(arch)  # raises a message naming the field
        raise
    return Cost(macs, params, peak * BYTES_PER_ELEMENT)
