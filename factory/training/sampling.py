"""Which sub-networks a progressive-shrinking step trains, as a pure function of (seed, step, k).

Phases open the space one dimension at a time (OFA): teacher = the full network; kernel = elastic
kernel; depth = + elastic depth; expand = + elastic width. Resolution is elastic in every phase.
Seeding by the global step means every process of a multi-process run trains the same sub-networks
without communicating, and a resumed run samples exactly what the interrupted one would have.
"""

from __future__ import annotations

import random
from dataclasses import replace

from supernets import ArchConfig, SearchSpace

PHASE_ORDER = ("teacher", "kernel", "depth", "expand")


def step_rng(*parts: object) -> random.Random:
    """A random.Random seeded by a string of `parts` (str seeds hash with SHA-512: stable across processes)."""
    return random.Random("/".join(str(p) for p in parts))


def derive_seed(*parts: object) -> int:
    return step_rng(*parts).getrandbits(63)


def constrain(space: SearchSpace, arch: ArchConfig, phase: str) -> ArchConfig:
    """Fix the dimensions that are not elastic yet in `phase` at their largest choice."""
    if phase not in PHASE_ORDER:
        raise ValueError(f"phase: got {phase!r}; allowed: {list(PHASE_ORDER)}")
    big = space.largest()
    if phase == "teacher":
        return replace(big, resolution=arch.resolution)
    if phase == "kernel":
        return replace(arch, depths=big.depths, expand_ratios=big.expand_ratios)
    if phase == "depth" and space.sampling != "compound":  # compound couples depth and expand: keep both
        return replace(arch, expand_ratios=big.expand_ratios)
    return arch


def sample_step(space: SearchSpace, phase: str, sampler: str, n: int, seed: int, global_step: int,
                smallest_every: int = 1) -> list[ArchConfig]:
    """The sub-networks of one optimizer step. `uniform`: n random ones (1 in the teacher phase).
    `sandwich`: the phase's largest, its smallest, then n-2 random ones (BigNAS); with `smallest_every`
    k > 1 the smallest is trained every k-th step and a random sub-network takes its slot in between (a
    two-network step then still trains the sub-networks between the extremes)."""
    if phase == "teacher":
        return [constrain(space, space.sample(step_rng(seed, global_step, 0)), phase)]
    if sampler == "uniform":
        return [constrain(space, space.sample(step_rng(seed, global_step, k)), phase) for k in range(n)]
    if sampler == "sandwich":
        smallest = global_step % smallest_every == 0
        archs = [space.largest(), constrain(space, space.smallest(), phase)] if smallest else [space.largest()]
        archs += [constrain(space, space.sample(step_rng(seed, global_step, k)), phase)
                  for k in range(len(archs), n)]
        return archs
    raise ValueError(f"sampler: got {sampler!r}; allowed: 'uniform', 'sandwich'")
