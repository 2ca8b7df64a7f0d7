"""Cost of a sub-network from its config alone: MACs, parameters, peak activation memory.

Counted the way `torch.utils.flop_counter.FlopCounterMode` counts (conv and linear multiply-adds;
no BN, activation or pooling). Block costs are tabulated once per (space, classes); a call is then
~20 table lookups, fast enough for search. `block_shapes` (each elastic block's channels, stride and
feature-map sizes) is the one source of block geometry; targets' latency and size models use it too.

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


BlockKey = tuple[int, bool, int, int, int]  # (stage, first-in-stage, kernel, expand, input resolution)


@dataclass(frozen=True)
class BlockShape:
    """What one MBConv computes: channels, feature-map sizes (in/out), stride, SE. The one source of
    block geometry: cost counting here, the latency and size models in targets.blocks."""

    in_channels: int
    out_channels: int
    hidden: int
    kernel: int
    stride: int
    hw_in: int
    hw_out: int
    use_se: bool

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def se_mid(self) -> int:
        """SE bottleneck width (0 without SE)."""
        return se_mid_channels(self.hidden) if self.use_se else 0

    @property
    def pointwise_macs(self) -> int:
        return self.in_channels * self.hidden * self.hw_in**2 + self.hidden * self.out_channels * self.hw_out**2

    @property
    def depthwise_macs(self) -> int:
        return self.hidden * self.kernel**2 * self.hw_out**2

    @property
    def hidden_elements(self) -> int:
        """Elements of the two hidden tensors: elementwise ops (activations, SE scaling) scale with it."""
        return self.hidden * (self.hw_in**2 + self.hw_out**2)

    @property
    def weights(self) -> int:
        """Stored weights once BN is folded into the convolutions (what an exported file holds)."""
        w = self.in_channels * self.hidden + self.hidden * self.kernel**2 + self.hidden * self.out_channels
        return w + 2 * self.hidden * self.se_mid

    @property
    def channels(self) -> int:
        """Bias / scale entries: one per output channel of every conv (BN folded into a bias)."""
        c = 2 * self.hidden + self.out_channels
        return c + (self.se_mid + self.hidden if self.use_se else 0)

    @property
    def layers(self) -> int:
        """Weighted layers (per-tensor overhead in the file: names, shapes, quantization params)."""
        return 3 + (2 if self.use_se else 0)


@lru_cache(maxsize=32)
def block_shapes(space: SearchSpace) -> dict[BlockKey, BlockShape]:
    """Every (stage, first, kernel, expand, resolution) elastic block of `space` with its shape."""
    spec = space.spec
    shapes: dict[BlockKey, BlockShape] = {}
    for res in spec.resolutions:
        hw = _out(res, spec.stem_stride)
        in_ch = spec.first_block_channels
        for st, stage in enumerate(spec.stages):
            hw_out = _out(hw, stage.stride)
            for first in (True, False):
                cin = in_ch if first else stage.out_channels
                stride = stage.stride if first else 1
                bhw = hw if first else hw_out
                for k in stage.kernel_choices:
                    for e in stage.expand_choices:
                        shapes[(st, first, k, e, res)] = BlockShape(
                            cin, stage.out_channels, hidden_channels(cin, e), k, stride, bhw, hw_out, stage.use_se)
            hw = hw_out
            in_ch = stage.out_channels
    return shapes


def _mbconv(b: BlockShape) -> tuple[int, int, int]:
    """(macs, params, peak elements) of one MBConv."""
    in_ch, out_ch, hidden, k, hw, ohw = b.in_channels, b.out_channels, b.hidden, b.kernel, b.hw_in, b.hw_out
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
    keep = x if b.residual and hidden != in_ch else 0
    peaks.append(keep + h1 + h2)
    if b.use_se:
        mid = b.se_mid
        macs += 2 * hidden * mid
        params += 2 * hidden * mid + mid + hidden
        peaks.append(keep + 2 * h2)
    o = out_ch * ohw * ohw
    macs += hidden * out_ch * ohw * ohw
    params += hidden * out_ch + 2 * out_ch
    peaks.append((x if b.residual else 0) + h2 + o)
    if b.residual:
        peaks.append(x + 2 * o)
    return macs, params, max(peaks)


def _fixed(space: SearchSpace, res: int, num_classes: int) -> tuple[int, int, int]:
    """(macs, params, peak elements) of what every sub-network at `res` runs: stem, first block, head."""
    spec = space.spec
    hw = _out(res, spec.stem_stride)
    stem_macs = spec.in_channels * spec.stem_channels * 9 * hw * hw
    stem_params = spec.in_channels * spec.stem_channels * 9 + 2 * spec.stem_channels
    stem_peak = spec.in_channels * res * res + spec.stem_channels * hw * hw
    fb = _mbconv(BlockShape(spec.stem_channels, spec.first_block_channels, spec.stem_channels, 3, 1, hw, hw, False))
    in_ch = spec.first_block_channels
    for stage in spec.stages:
        hw = _out(hw, stage.stride)
        in_ch = stage.out_channels
    f, m = spec.final_expand_channels, spec.feature_mix_channels
    head_macs = in_ch * f * hw * hw + f * m + m * num_classes
    head_params = in_ch * f + 2 * f + f * m + m * num_classes + num_classes
    head_peak = in_ch * hw * hw + f * hw * hw
    return stem_macs + fb[0] + head_macs, stem_params + fb[1] + head_params, max(stem_peak, fb[2], head_peak)


@dataclass(frozen=True)
class _Tables:
    fixed: dict[int, tuple[int, int, int]]  # resolution -> stem + first block + head
    blocks: dict[BlockKey, tuple[int, int, int]]
    stage_slots: tuple[tuple[int, ...], ...]


@lru_cache(maxsize=64)
def _tables(space: SearchSpace, num_classes: int) -> _Tables:
    fixed = {res: _fixed(space, res, num_classes) for res in space.spec.resolutions}
    blocks = {key: _mbconv(shape) for key, shape in block_shapes(space).items()}
    stage_slots = tuple(tuple(space.stage_slots(st)) for st in range(len(space.spec.stages)))
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
