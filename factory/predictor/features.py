"""What the accuracy predictor sees of a sub-network: a fixed-length float vector per arch.

Four parts, concatenated by `predictor_features`: the one-hot genome (OFA's encoding), the log cost
(MACs, params), per-resolution stage summaries, and per-resolution copies of the genome's block part
(what a block choice is worth depends on the input size: the first, strided block of a stage most).
Pure numpy: no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from supernets.arch import ArchConfig
from supernets.cost import cost
from supernets.space import SearchSpace

COST_FEATURE_SCALE = 5.0  # ~z-score scale: small scales let the weight decay / ridge penalty drown them


def onehot_features(space: SearchSpace, archs: Sequence[ArchConfig]) -> np.ndarray:
    """(N, F) float32: one-hot resolution and depth per stage; one-hot kernel and expand per *active*
    slot, all zeros for inactive slots (so equal networks encode equally, as in OFA)."""
    genes = space.gene_choices
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in genes])])
    n_stages = len(space.stages)
    slot_stage = np.array([st for st in range(n_stages) for _ in space.stage_slots(st)])
    slot_pos = np.array([pos for st in range(n_stages) for pos, _ in enumerate(space.stage_slots(st))])
    index = [{v: i for i, v in enumerate(c)} for c in genes]  # not space.encode: no re-validation per arch
    try:
        genome = np.array([[ix[v] for ix, v in zip(index, (a.resolution, *a.depths, *a.kernel_sizes,
                                                            *a.expand_ratios), strict=True)] for a in archs],
                          dtype=np.int64).reshape(len(archs), len(genes))
    except (KeyError, ValueError):
        for a in archs:
            space.validate(a)  # names the bad field
        raise
    depths = np.array([a.depths for a in archs], dtype=np.int64).reshape(len(archs), n_stages)
    active = slot_pos[None, :] < depths[:, slot_stage]  # (N, slots)
    mask = np.concatenate([np.ones((len(archs), 1 + n_stages), bool), active, active], axis=1)
    feats = np.zeros((len(archs), int(offsets[-1])), dtype=np.float32)
    rows = np.repeat(np.arange(len(archs)), len(genes))
    cols = (genome + offsets[None, :-1]).reshape(-1)
    feats[rows, cols] = mask.reshape(-1)
    return feats


def cost_features(space: SearchSpace, archs: Sequence[ArchConfig], num_classes: int) -> np.ndarray:
    """(N, 2): log MACs and log params, 0..1 between the smallest and largest sub-network, x5.
    Why: with a few hundred samples they carry most of the size -> accuracy trend, so the one-hot part
    only has to learn the rest."""
    lo, hi = cost(space, space.smallest(), num_classes), cost(space, space.largest(), num_classes)
    out = np.empty((len(archs), 2), dtype=np.float32)
    for i, a in enumerate(archs):
        c = cost(space, a, num_classes)
        out[i, 0] = (np.log(c.macs) - np.log(lo.macs)) / (np.log(hi.macs) - np.log(lo.macs))
        out[i, 1] = (np.log(c.params) - np.log(lo.params)) / (np.log(hi.params) - np.log(lo.params))
    return out * COST_FEATURE_SCALE


def resolution_stage_features(space: SearchSpace, archs: Sequence[ArchConfig]) -> np.ndarray:
    """(N, R * 3 * S): per stage mean kernel / 7, mean expand / 6 and depth / 4, placed in the block of
    the arch's resolution (zeros elsewhere). Why: what a kernel is worth depends on the input size, an
    interaction a one-hot encoding only learns from many more samples."""
    n_stages = len(space.stages)
    res_index = {r: i for i, r in enumerate(space.anchor_resolutions)}
    out = np.zeros((len(archs), len(res_index), 3, n_stages), dtype=np.float32)
    slots = [list(space.stage_slots(st)) for st in range(n_stages)]
    for i, a in enumerate(archs):
        summary = np.zeros((3, n_stages), dtype=np.float32)
        for st in range(n_stages):
            active = slots[st][: a.depths[st]]
            summary[0, st] = sum(a.kernel_sizes[j] for j in active) / (7.0 * len(active))
            summary[1, st] = sum(a.expand_ratios[j] for j in active) / (6.0 * len(active))
            summary[2, st] = a.depths[st] / 4.0
        for anchor, weight in space.anchor_weights(a.resolution).items():  # between anchors: interpolated
            out[i, res_index[anchor]] += weight * summary
    return out.reshape(len(archs), -1)


def resolution_block_features(space: SearchSpace, archs: Sequence[ArchConfig],
                              onehot: np.ndarray | None = None) -> np.ndarray:
    """(N, R * B): the block part of `onehot_features` (depth per stage, kernel and expand per active slot;
    B columns) placed in the block of the arch's anchor resolution, weighted like
    `resolution_stage_features` between anchors. Why: a tree then splits on "kernel 3 in the first block
    of stage 2 at 20 px" in one step instead of two."""
    onehot = onehot_features(space, archs) if onehot is None else onehot
    blocks = onehot[:, len(space.resolutions):]
    res_index = {r: i for i, r in enumerate(space.anchor_resolutions)}
    weights = np.zeros((len(archs), len(res_index)), dtype=np.float32)
    for i, a in enumerate(archs):
        for anchor, weight in space.anchor_weights(a.resolution).items():
            weights[i, res_index[anchor]] = weight
    return (weights[:, :, None] * blocks[:, None, :]).reshape(len(archs), -1)


def predictor_features(space: SearchSpace, archs: Sequence[ArchConfig], num_classes: int) -> np.ndarray:
    """What the predictor sees: `onehot_features`, `cost_features`, `resolution_stage_features` and
    `resolution_block_features`."""
    onehot = onehot_features(space, archs)
    return np.concatenate([onehot, cost_features(space, archs, num_classes), resolution_stage_features(space, archs),
                           resolution_block_features(space, archs, onehot)], axis=1)
