import random
from unittest.mock import patch

import pytest
import torch

from supernets import ArchConfig, cost, get_space


def test_cost_grows_with_resolution_depth_kernel_and_expand():
    space = get_space()
    base = space.smallest()
    bigger = [
        ArchConfig(24, base.depths, base.kernel_sizes, base.expand_ratios),
        ArchConfig(base.resolution, (3, *base.depths[1:]), base.kernel_sizes, base.expand_ratios),
        ArchConfig(base.resolution, base.depths, (5, *base.kernel_sizes[1:]), base.expand_ratios),
        ArchConfig(base.resolution, base.depths, base.kernel_sizes, (6, *base.expand_ratios[1:])),
    ]
    c0 = cost(space, base)
    for arch in bigger:
        assert cost(space, arch).macs > c0.macs
    assert cost(space, bigger[0]).params == c0.params  # resolution does not change weights
    assert cost(space, bigger[0]).peak_activation_bytes > c0.peak_activation_bytes


def test_inactive_slots_do_not_change_cost():
    space = get_space()
    arch = space.smallest()
    kernels = list(arch.kernel_sizes)
    kernels[3] = 7  # slot 3 of stage 0 is beyond depth 2
    other = ArchConfig(arch.resolution, arch.depths, tuple(kernels), arch.expand_ratios)
    assert cost(space, other) == cost(space, arch)


def test_cost_of_invalid_arch_names_the_field():
    space = get_space()
    arch = space.smallest()
    with pytest.raises(ValueError, match="kernel_sizes"):
        cost(space, ArchConfig(arch.resolution, arch.depths, (4,) * 20, arch.expand_ratios))


def test_peak_activation_counts_input_image_at_least():
    space = get_space()
    arch = space.largest()
    assert cost(space, arch).peak_activation_bytes >= 3 * 32 * 32 * 4


def test_cost_builds_no_module():
    """cost() is arithmetic on the spec, cheap enough for a search's inner loop (bench/search_speed.py
    times it): it must not build or run a network."""
    space = get_space()
    archs = [space.sample(random.Random(i)) for i in range(20)]
    with patch.object(torch.nn.Module, "__init__", side_effect=AssertionError("cost() built a module")):
        for a in archs:
            assert cost(space, a).macs > 0
