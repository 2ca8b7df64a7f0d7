"""Search spaces: declarative stage specs, compound scaling, and the sub-network genome.

A space is data. Modules never see multipliers: `get_space(name, phi=...)` applies EfficientNet
compound scaling once, in `scale_spec`, and every consumer (supernet, cost, exporters, search)
reads the scaled spec.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Literal

from supernets.arch import ArchConfig

Activation = Literal["relu", "hswish"]
SamplingMode = Literal["independent", "compound"]

# EfficientNet compound-scaling coefficients (Tan & Le 2019): alpha * beta^2 * gamma^2 ~= 2.
DEPTH_COEFF = 1.2
WIDTH_COEFF = 1.1
RESOLUTION_COEFF = 1.15
CHANNEL_DIVISOR = 8
RESOLUTION_DIVISOR = 4


def make_divisible(value: float, divisor: int = CHANNEL_DIVISOR, min_value: int | None = None) -> int:
    """The one rounding rule for channels and resolutions (never more than 10% below `value`)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def hidden_channels(in_channels: int, expand_ratio: int) -> int:
    """Width of an MBConv's expanded tensor."""
    return make_divisible(in_channels * expand_ratio)


def se_mid_channels(channels: int) -> int:
    """SE bottleneck width: a quarter of the channels, a multiple of 8 (as OFA-MobileNetV3)."""
    return make_divisible(channels // 4)


@dataclass(frozen=True)
class StageSpec:
    """One elastic stage: a row of self-describing choices."""

    out_channels: int
    stride: int
    use_se: bool
    activation: Activation
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    expand_choices: tuple[int, ...] = (3, 4, 6)
    depth_choices: tuple[int, ...] = (2, 3, 4)

    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)


@dataclass(frozen=True)
class SpaceSpec:
    """Everything that defines a search space, before any scaling is applied."""

    name: str
    stem_channels: int
    stem_stride: int
    first_block_channels: int
    stages: tuple[StageSpec, ...]
    final_expand_channels: int
    feature_mix_channels: int
    resolutions: tuple[int, ...]
    in_channels: int = 3
    phi: float = 0.0
    width: float = 1.0
    # Hand-scaled baselines per anchor resolution: every uniform (depth, kernel, expand) = 27, or the
    # "diagonal" (all smallest / all middle / all largest) = 3. Each is measured for accuracy next to the
    # predictor's samples: cheap at 28 px, ~3 s a network at 224 px on a 2-core CPU (108 would be 6 min).
    baselines: Literal["grid", "diagonal"] = "grid"


def scale_spec(spec: SpaceSpec, phi: float, width: float = 1.0) -> SpaceSpec:
    """EfficientNet compound scaling: depth x1.2^phi, width x1.1^phi (multiples of 8),
    resolution x1.15^phi (multiples of 4). `width` is OFA's width multiplier, a property of the space
    separate from phi: every channel count x width, rounded once with phi's factor (for phi = 0 this is
    exactly OFA's `make_divisible(base * width_mult, 8)`). Pure: returns a new spec."""
    if phi < 0:
        raise ValueError(f"phi: must be >= 0, got {phi}")
    if width <= 0:
        raise ValueError(f"width: must be > 0, got {width}")
    if phi == 0 and width == 1.0:
        return spec
    channel_factor = width * WIDTH_COEFF**phi
    depth = DEPTH_COEFF**phi
    res = RESOLUTION_COEFF**phi

    def channels(c: int) -> int:
        return make_divisible(c * channel_factor)

    def depths(choices: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted({math.ceil(d * depth) for d in choices}))

    stages = tuple(
        replace(s, out_channels=channels(s.out_channels), depth_choices=depths(s.depth_choices))
        for s in spec.stages
    )
    return replace(
        spec,
        stem_channels=channels(spec.stem_channels),
        first_block_channels=channels(spec.first_block_channels),
        stages=stages,
        final_expand_channels=channels(spec.final_expand_channels),
        feature_mix_channels=channels(spec.feature_mix_channels),
        resolutions=tuple(sorted({make_divisible(r * res, RESOLUTION_DIVISOR) for r in spec.resolutions})),
        phi=phi,
        width=width,
    )


_IMAGENET = SpaceSpec(
    name="ofa_mbv3",
    stem_channels=16,
    stem_stride=2,
    first_block_channels=16,
    stages=(
        StageSpec(out_channels=24, stride=2, use_se=False, activation="relu"),
        StageSpec(out_channels=40, stride=2, use_se=True, activation="relu"),
        StageSpec(out_channels=80, stride=2, use_se=False, activation="hswish"),
        StageSpec(out_channels=112, stride=1, use_se=True, activation="hswish"),
        StageSpec(out_channels=160, stride=2, use_se=True, activation="hswish"),
    ),
    final_expand_channels=960,
    feature_mix_channels=1280,
    resolutions=tuple(range(128, 225, 4)),  # OFA's 128-224 px in steps of 4
    baselines="diagonal",
)

# Small inputs (20-32 px): the ImageNet layout with narrower late stages and head. Its total stride
# of 32 would reduce a 28 px digit to 1x1; here the last stage keeps stride 1, so the total stride is
# 16 and every resolution ends on a 2x2 map (stride 8 costs 4x the MACs; docs/decisions.md).
_SMALL = replace(
    _IMAGENET,
    name="small",
    stages=(
        *_IMAGENET.stages[:2],
        replace(_IMAGENET.stages[2], out_channels=64),
        replace(_IMAGENET.stages[3], out_channels=96),
        replace(_IMAGENET.stages[4], out_channels=128, stride=1),
    ),
    final_expand_channels=384,
    feature_mix_channels=512,
    resolutions=(20, 24, 28, 32),
    baselines="grid",
)
ANCHOR_RESOLUTIONS = 4  # see SearchSpace.anchor_resolutions

SPACES: dict[str, SpaceSpec] = {"small": _SMALL, "ofa_mbv3": _IMAGENET}
DEFAULT_SPACE = "small"


@dataclass(frozen=True)
class SearchSpace:
    """A scaled space: the choices, the genome, sampling and validation of `ArchConfig`s."""

    spec: SpaceSpec
    sampling: SamplingMode = "independent"
    _slot_stage: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sampling not in ("independent", "compound"):
            raise ValueError(f"sampling: got {self.sampling!r}, allowed: 'independent', 'compound'")
        if self.sampling == "compound":
            for i, s in enumerate(self.spec.stages):
                if len(s.depth_choices) != len(s.expand_choices):
                    raise ValueError(
                        f"stage {i}: compound sampling couples depth and expand choices one to one, "
                        f"but has {len(s.depth_choices)} depths and {len(s.expand_choices)} expands"
                    )
        slots = tuple(i for i, s in enumerate(self.spec.stages) for _ in range(s.max_depth))
        object.__setattr__(self, "_slot_stage", slots)

    # ----- shape of the space -------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        return self.spec.stages

    @property
    def resolutions(self) -> tuple[int, ...]:
        return self.spec.resolutions

    @cached_property
    def anchor_resolutions(self) -> tuple[int, ...]:
        """At most ANCHOR_RESOLUTIONS evenly spaced resolutions (min and max included; all of them when the
        space has that few). Where something is kept per resolution (hand-scaled baselines, the predictor's
        per-resolution features, the latency model's fixed part, sampling strata), a space with OFA's 25
        resolutions keeps it per anchor and interpolates in between, so its cost does not grow 6x."""
        res = self.resolutions
        if len(res) <= ANCHOR_RESOLUTIONS:
            return res
        picks = [res[round(i * (len(res) - 1) / (ANCHOR_RESOLUTIONS - 1))] for i in range(ANCHOR_RESOLUTIONS)]
        return tuple(dict.fromkeys(picks))

    def anchor_weights(self, resolution: int, power: float = 1.0) -> dict[int, float]:
        """Linear interpolation weights of `resolution` between its two neighbouring anchors, in
        resolution**power (power 2: work that grows with the feature-map area)."""
        anchors = self.anchor_resolutions
        if resolution in anchors:
            return {resolution: 1.0}
        hi = next(a for a in anchors if a > resolution)
        lo = anchors[anchors.index(hi) - 1]
        t = (resolution**power - lo**power) / (hi**power - lo**power)
        return {lo: 1.0 - t, hi: t}

    @property
    def num_slots(self) -> int:
        return len(self._slot_stage)

    def stage_slots(self, stage: int) -> range:
        """Indices into `kernel_sizes` / `expand_ratios` that belong to `stage`."""
        start = sum(s.max_depth for s in self.stages[:stage])
        return range(start, start + self.stages[stage].max_depth)

    def size(self) -> int:
        """Number of distinct sub-networks (inactive slots do not count)."""
        total = len(self.resolutions)
        for s in self.stages:
            k = len(s.kernel_choices)
            if self.sampling == "compound":
                total *= sum(k**d for d in s.depth_choices)
            else:
                total *= sum((k * len(s.expand_choices)) ** d for d in s.depth_choices)
        return total

    # ----- canonical members --------------------------------------------------------------
    def largest(self) -> ArchConfig:
        return self._extreme(max)

    def smallest(self) -> ArchConfig:
        return self._extreme(min)

    def _extreme(self, pick) -> ArchConfig:
        """Every choice taken at its `pick` (max or min)."""
        return ArchConfig(
            resolution=pick(self.resolutions),
            depths=tuple(pick(s.depth_choices) for s in self.stages),
            kernel_sizes=tuple(pick(self.stages[st].kernel_choices) for st in self._slot_stage),
            expand_ratios=tuple(pick(self.stages[st].expand_choices) for st in self._slot_stage),
        )

    def uniform(self, resolution: int, depth: int, kernel: int, expand: int) -> ArchConfig:
        """The same depth/kernel/expand everywhere: what hand scaling would try."""
        arch = ArchConfig(
            resolution=resolution,
            depths=(depth,) * len(self.stages),
            kernel_sizes=(kernel,) * self.num_slots,
            expand_ratios=(expand,) * self.num_slots,
        )
        self.validate(arch)
        return arch

    def uniform_grid(self) -> list[ArchConfig]:
        """Every uniformly scaled sub-network (choices every stage offers), smallest first per resolution:
        the baselines a user would try by hand, measured alongside the predictor's samples so the factory
        never ships something a hand-scaled network beats on the same measurement."""
        common = [sorted(set.intersection(*(set(getattr(st, f)) for st in self.stages)))
                  for f in ("depth_choices", "kernel_choices", "expand_choices")]
        if self.spec.baselines == "diagonal":
            steps = min(len(c) for c in common)
            picks = [tuple(c[round(i * (len(c) - 1) / max(1, steps - 1))] for c in common) for i in range(steps)]
            return [self.uniform(r, d, k, e) for r in self.anchor_resolutions for d, k, e in picks]
        return [self.uniform(r, d, k, e) for r in self.anchor_resolutions for d in common[0] for k in common[1]
                for e in common[2]]

    def sample(self, rng: random.Random) -> ArchConfig:
        """A uniformly random sub-network (inactive slots random too, as in OFA's genome)."""
        depths: list[int] = []
        kernels: list[int] = []
        expands: list[int] = []
        for s in self.stages:
            if self.sampling == "compound":
                idx = rng.randrange(len(s.depth_choices))
                depths.append(s.depth_choices[idx])
                expands.extend([s.expand_choices[idx]] * s.max_depth)
            else:
                depths.append(rng.choice(s.depth_choices))
                expands.extend(rng.choice(s.expand_choices) for _ in range(s.max_depth))
            kernels.extend(rng.choice(s.kernel_choices) for _ in range(s.max_depth))
        return ArchConfig(
            resolution=rng.choice(self.resolutions),
            depths=tuple(depths),
            kernel_sizes=tuple(kernels),
            expand_ratios=tuple(expands),
        )

    def canonical(self, arch: ArchConfig) -> ArchConfig:
        """Same function, inactive slots set to the smallest choice: equal nets compare equal."""
        kernels = list(arch.kernel_sizes)
        expands = list(arch.expand_ratios)
        for st, s in enumerate(self.stages):
            for pos, slot in enumerate(self.stage_slots(st)):
                if pos >= arch.depths[st]:
                    kernels[slot] = min(s.kernel_choices)
                    expands[slot] = min(s.expand_choices)
        return replace(arch, kernel_sizes=tuple(kernels), expand_ratios=tuple(expands))

    def active_blocks(self, arch: ArchConfig) -> list[tuple[int, int, int, int]]:
        """(stage, position, kernel, expand) of every block the sub-network runs."""
        blocks = []
        for st in range(len(self.stages)):
            slots = self.stage_slots(st)
            for pos in range(arch.depths[st]):
                slot = slots[pos]
                blocks.append((st, pos, arch.kernel_sizes[slot], arch.expand_ratios[slot]))
        return blocks

    # ----- validation ---------------------------------------------------------------------
    def validate(self, arch: ArchConfig) -> None:
        """Raise ValueError naming the field, the bad value and the allowed values."""
        if not isinstance(arch, ArchConfig):
            raise ValueError(f"arch: expected an ArchConfig, got {type(arch).__name__}")
        if arch.resolution not in self.resolutions:
            raise ValueError(
                f"resolution: {arch.resolution!r} is not allowed in space {self.name!r}; "
                f"allowed: {list(self.resolutions)}"
            )
        n_stages = len(self.stages)
        for fname, values, expected in (
            ("depths", arch.depths, n_stages),
            ("kernel_sizes", arch.kernel_sizes, self.num_slots),
            ("expand_ratios", arch.expand_ratios, self.num_slots),
        ):
            if len(values) != expected:
                raise ValueError(f"{fname}: expected {expected} values for space {self.name!r}, got {len(values)}")
        for st, s in enumerate(self.stages):
            if arch.depths[st] not in s.depth_choices:
                raise ValueError(f"depths[{st}]: {arch.depths[st]!r} not allowed; allowed: {list(s.depth_choices)}")
            for slot in self.stage_slots(st):
                if arch.kernel_sizes[slot] not in s.kernel_choices:
                    raise ValueError(
                        f"kernel_sizes[{slot}]: {arch.kernel_sizes[slot]!r} not allowed (stage {st}); "
                        f"allowed: {list(s.kernel_choices)}"
                    )
                if arch.expand_ratios[slot] not in s.expand_choices:
                    raise ValueError(
                        f"expand_ratios[{slot}]: {arch.expand_ratios[slot]!r} not allowed (stage {st}); "
                        f"allowed: {list(s.expand_choices)}"
                    )
            if self.sampling == "compound":
                want = s.expand_choices[s.depth_choices.index(arch.depths[st])]
                for pos, slot in enumerate(self.stage_slots(st)):
                    if pos < arch.depths[st] and arch.expand_ratios[slot] != want:
                        raise ValueError(
                            f"expand_ratios[{slot}]: {arch.expand_ratios[slot]!r} breaks compound coupling; "
                            f"stage {st} at depth {arch.depths[st]} needs expand {want}"
                        )

    # ----- genome -------------------------------------------------------------------------
    @cached_property
    def gene_choices(self) -> tuple[tuple[int, ...], ...]:
        """Choices per gene: [resolution, depth per stage, kernel per slot, expand per slot]."""
        genes: list[tuple[int, ...]] = [self.resolutions]
        genes += [s.depth_choices for s in self.stages]
        genes += [self.stages[st].kernel_choices for st in self._slot_stage]
        genes += [self.stages[st].expand_choices for st in self._slot_stage]
        return tuple(genes)

    def encode(self, arch: ArchConfig) -> list[int]:
        """Fixed-length integer vector of choice indices (the search genome)."""
        self.validate(arch)
        values = [arch.resolution, *arch.depths, *arch.kernel_sizes, *arch.expand_ratios]
        return [choices.index(v) for choices, v in zip(self.gene_choices, values, strict=True)]

    def decode(self, genome: list[int] | tuple[int, ...]) -> ArchConfig:
        genes = self.gene_choices
        if len(genome) != len(genes):
            raise ValueError(f"genome: expected {len(genes)} genes, got {len(genome)}")
        values = []
        for i, (g, choices) in enumerate(zip(genome, genes, strict=True)):
            if not 0 <= int(g) < len(choices):
                raise ValueError(f"genome[{i}]: index {g} out of range 0..{len(choices) - 1}")
            values.append(choices[int(g)])
        n = len(self.stages)
        s = self.num_slots
        return ArchConfig(
            resolution=values[0],
            depths=tuple(values[1 : 1 + n]),
            kernel_sizes=tuple(values[1 + n : 1 + n + s]),
            expand_ratios=tuple(values[1 + n + s :]),
        )

    def describe(self) -> dict:
        """JSON-able summary of the space (for `factory space show`)."""
        sp = self.spec
        return {
            "name": sp.name,
            "phi": sp.phi,
            "width": sp.width,
            "sampling": self.sampling,
            "resolutions": list(sp.resolutions),
            "stem": {"channels": sp.stem_channels, "stride": sp.stem_stride},
            "first_block_channels": sp.first_block_channels,
            "stages": [
                {
                    "out_channels": s.out_channels,
                    "stride": s.stride,
                    "se": s.use_se,
                    "activation": s.activation,
                    "kernel_choices": list(s.kernel_choices),
                    "expand_choices": list(s.expand_choices),
                    "depth_choices": list(s.depth_choices),
                }
                for s in sp.stages
            ],
            "head": {
                "final_expand_channels": sp.final_expand_channels,
                "feature_mix_channels": sp.feature_mix_channels,
            },
            "num_subnetworks": self.size(),
        }


def get_space(name: str = DEFAULT_SPACE, phi: float = 0.0, sampling: SamplingMode = "independent",
              width: float = 1.0) -> SearchSpace:
    """A named space, compound-scaled by `phi`, channels times OFA's width multiplier `width`."""
    if name not in SPACES:
        raise ValueError(f"space: unknown name {name!r}; allowed: {sorted(SPACES)}")
    return SearchSpace(scale_spec(SPACES[name], phi, width), sampling=sampling)


def space_record(space: SearchSpace) -> dict:
    """What run folders, predictors and tables record to rebuild `space` (`space_from_record`)."""
    return {"name": space.name, "phi": float(space.spec.phi), "sampling": space.sampling,
            "width": float(space.spec.width)}


def space_from_record(record: dict) -> SearchSpace:
    """Inverse of `space_record`; records written before the width multiplier existed mean width 1.0."""
    return get_space(record["name"], phi=float(record["phi"]), sampling=record.get("sampling", "independent"),
                     width=float(record.get("width", 1.0)))
