"""Per-block features of a space for the latency and size models, computed from its spec alone (no torch).

One block is keyed by (stage, first-in-stage, kernel, expand, input resolution): those five values
fix its channels, stride and feature-map sizes, hence its work (`supernets.cost.block_shapes`, the
one source of block geometry, shared with cost counting). The latency table and the size model
are linear in the feature vectors defined here, so a sub-network's prediction is a sum of per-block
table entries plus a per-resolution fixed part (stem + first block + head + per-call overhead).
"""

from __future__ import annotations

import numpy as np

from supernets.arch import ArchConfig
from supernets.cost import BlockKey, BlockShape, block_shapes
from supernets.space import SearchSpace


def block_keys(space: SearchSpace, arch: ArchConfig) -> list[BlockKey]:
    """Keys of the blocks `arch` runs, in order."""
    return [(st, pos == 0, k, e, arch.resolution) for st, pos, k, e in space.active_blocks(arch)]


# ----- latency features ------------------------------------------------------------------------------
def latency_feature_names(space: SearchSpace) -> list[str]:
    """Columns of the latency design matrix (see `latency_block_features`)."""
    kernels = sorted({k for s in space.stages for k in s.kernel_choices})
    per_stage = [f"{what}_stage{s}" for s in range(len(space.stages))
                 for what in ("blocks", "pointwise_mmacs", "depthwise_mmacs", "hidden_kelements")]
    return ([f"fixed_res{r}" for r in space.anchor_resolutions] + per_stage
            + [f"depthwise_k{k}_mmacs" for k in kernels])


def latency_block_features(space: SearchSpace, key: BlockKey) -> np.ndarray:
    """Feature vector of one block. Per stage (feature-map size, SE and activation differ by stage,
    so runtimes reach different efficiency there): op overhead (a count), pointwise work, depthwise
    work, elementwise traffic; shared across stages: depthwise work per kernel size (runtimes differ
    most in how well they vectorise 3x3 / 5x5 / 7x7 depthwise). Chosen over a 15-column variant
    without per-stage work by 5-fold CV on 80 ONNX Runtime samples (share within +-10%: 88% vs 78%
    at 2 threads, 98% vs 99% at 1 thread; also better when refitted on 32 samples)."""
    names = latency_feature_names(space)
    shape = block_shapes(space)[key]
    st, _, k, _, _ = key
    f = np.zeros(len(names))
    f[names.index(f"blocks_stage{st}")] = 1.0
    f[names.index(f"pointwise_mmacs_stage{st}")] = shape.pointwise_macs / 1e6
    f[names.index(f"depthwise_mmacs_stage{st}")] = shape.depthwise_macs / 1e6
    f[names.index(f"hidden_kelements_stage{st}")] = shape.hidden_elements / 1e3
    f[names.index(f"depthwise_k{k}_mmacs")] = shape.depthwise_macs / 1e6
    return f


def latency_fixed_features(space: SearchSpace, resolution: int) -> np.ndarray:
    """One-hot of the resolution; between anchor resolutions (OFA's 25 sizes) interpolated in
    resolution^2, as the stem's and head's work grows with the feature-map area."""
    names = latency_feature_names(space)
    f = np.zeros(len(names))
    for anchor, weight in space.anchor_weights(resolution, power=2).items():
        f[names.index(f"fixed_res{anchor}")] = weight
    return f


def latency_design(space: SearchSpace, arch: ArchConfig) -> np.ndarray:
    """Row of the latency design matrix for one sub-network: fixed part + sum of its blocks."""
    row = latency_fixed_features(space, arch.resolution)
    for key in block_keys(space, arch):
        row = row + latency_block_features(space, key)
    return row


# ----- size features ---------------------------------------------------------------------------------
SIZE_FEATURES = ("weights", "channels", "layers", "constant")


def size_block_features(shape: BlockShape) -> np.ndarray:
    return np.array([shape.weights, shape.channels, shape.layers, 0.0], dtype=float)


def size_design(space: SearchSpace, arch: ArchConfig) -> np.ndarray:
    """Row of the size design matrix: the blocks' weights / channels / layers plus a constant (the
    stem, first block and head do not depend on the sub-network; the constant absorbs them)."""
    shapes = block_shapes(space)
    row = np.array([0.0, 0.0, 0.0, 1.0])
    for key in block_keys(space, arch):
        row = row + size_block_features(shapes[key])
    return row
