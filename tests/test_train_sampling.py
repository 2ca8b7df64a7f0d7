"""Sub-network sampling per step: pure function of (seed, step), constrained by phase."""

from __future__ import annotations

from factory.training.sampling import constrain, sample_step
from supernets import get_space

SPACE = get_space("small")


def test_sampling_is_a_function_of_seed_and_step():
    a = sample_step(SPACE, "expand", "uniform", 3, seed=0, global_step=5)
    assert a == sample_step(SPACE, "expand", "uniform", 3, seed=0, global_step=5)
    assert a != sample_step(SPACE, "expand", "uniform", 3, seed=0, global_step=6)
    assert a != sample_step(SPACE, "expand", "uniform", 3, seed=1, global_step=5)
    assert len(set(a)) == 3


def test_phases_open_one_dimension_at_a_time():
    big = SPACE.largest()
    teacher = [sample_step(SPACE, "teacher", "uniform", 4, 0, s) for s in range(20)]
    assert all(len(t) == 1 and t[0].depths == big.depths and t[0].kernel_sizes == big.kernel_sizes for t in teacher)
    assert len({t[0].resolution for t in teacher}) > 1  # resolution elastic from the start
    kernel = [a for s in range(20) for a in sample_step(SPACE, "kernel", "uniform", 2, 0, s)]
    assert all(a.depths == big.depths and a.expand_ratios == big.expand_ratios for a in kernel)
    assert len({a.kernel_sizes for a in kernel}) > 1
    depth = [a for s in range(20) for a in sample_step(SPACE, "depth", "uniform", 2, 0, s)]
    assert all(a.expand_ratios == big.expand_ratios for a in depth) and len({a.depths for a in depth}) > 1
    expand = [a for s in range(20) for a in sample_step(SPACE, "expand", "uniform", 2, 0, s)]
    assert len({a.expand_ratios for a in expand}) > 1
    for a in kernel + depth + expand:
        SPACE.validate(a)


def test_sandwich_trains_largest_and_phase_smallest_first():
    archs = sample_step(SPACE, "depth", "sandwich", 4, 0, 3)
    assert archs[0] == SPACE.largest()
    assert archs[1] == constrain(SPACE, SPACE.smallest(), "depth")
    assert archs[1].depths == SPACE.smallest().depths and archs[1].expand_ratios == SPACE.largest().expand_ratios
    assert len(archs) == 4
    assert sample_step(SPACE, "expand", "sandwich", 2, 0, 3)[1] == SPACE.smallest()


def test_sandwich_smallest_every_other_step_gives_its_slot_to_a_random_one():
    steps = [sample_step(SPACE, "expand", "sandwich", 2, 0, s, smallest_every=2) for s in range(40)]
    assert all(len(a) == 2 and a[0] == SPACE.largest() for a in steps)
    assert all(steps[s][1] == SPACE.smallest() for s in range(0, 40, 2))
    between = [steps[s][1] for s in range(1, 40, 2)]
    assert SPACE.smallest() not in between and len(set(between)) > 10  # random, not a fixed one
    assert sample_step(SPACE, "expand", "sandwich", 2, 0, 7) == sample_step(SPACE, "expand", "sandwich", 2, 0, 7, 1)
