import itertools
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supernets import ArchConfig, get_space, make_divisible
from supernets.space import SPACES


def test_default_space_has_more_than_1e19_subnetworks():
    assert get_space().size() >= 10**19


def test_compound_sampling_shrinks_space_and_couples_depth_and_expand():
    space = get_space(sampling="compound")
    assert space.size() < get_space().size()
    rng = random.Random(3)
    for _ in range(50):
        arch = space.sample(rng)
        space.validate(arch)
        for i, stage in enumerate(space.stages):
            want = stage.expand_choices[stage.depth_choices.index(arch.depths[i])]
            assert {arch.expand_ratios[s] for s in space.stage_slots(i)} == {want}


def test_compound_validation_refuses_uncoupled_expand():
    space = get_space(sampling="compound")
    arch = space.smallest()  # depth 2 couples with expand 3
    bad = ArchConfig(arch.resolution, arch.depths, arch.kernel_sizes, (6, *arch.expand_ratios[1:]))
    with pytest.raises(ValueError, match=r"expand_ratios\[0\]"):
        space.validate(bad)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(sorted(SPACES)), phi=st.sampled_from([0, 1, 2]))
def test_encode_decode_round_trip(seed, name, phi):
    space = get_space(name, phi=phi)
    arch = space.sample(random.Random(seed))
    genome = space.encode(arch)
    assert len(genome) == len(space.gene_choices)
    assert all(0 <= g < len(c) for g, c in zip(genome, space.gene_choices, strict=True))
    assert space.decode(genome) == arch
    assert ArchConfig.from_dict(json.loads(arch.to_json())) == arch


@settings(max_examples=100, deadline=None)
@given(genome=st.lists(st.integers(0, 3), min_size=46, max_size=46))
def test_any_in_range_genome_decodes_to_a_valid_arch(genome):
    space = get_space()
    genome = [g % len(c) for g, c in zip(genome, space.gene_choices, strict=True)]
    arch = space.decode(genome)
    space.validate(arch)
    assert space.encode(arch) == genome


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resolution": 33}, "resolution"),
        ({"depths": [2, 3, 4, 5, 2]}, r"depths\[3\]"),
        ({"depths": [2, 3]}, "depths"),
        ({"kernel_sizes": [4] + [3] * 19}, r"kernel_sizes\[0\]"),
        ({"expand_ratios": [3] * 19 + [5]}, r"expand_ratios\[19\]"),
        ({"expand_ratios": [3] * 21}, "expand_ratios"),
    ],
)
def test_invalid_config_is_refused_naming_the_field(change, field):
    space = get_space()
    data = {**space.smallest().to_dict(), **change}
    with pytest.raises(ValueError, match=field) as info:
        space.validate(ArchConfig.from_dict(data))
    if "[" in field:
        assert "allowed" in str(info.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"resolution": "32", "depths": [], "kernel_sizes": [], "expand_ratios": []}, "resolution"),
        ({"resolution": 32, "depths": [2.5], "kernel_sizes": [], "expand_ratios": []}, "depths"),
        ({"resolution": 32, "depths": [], "kernel_sizes": [], "expand_ratios": [], "ks": []}, "unknown"),
        ({"resolution": 32, "depths": []}, "missing"),
    ],
)
def test_from_dict_refuses_malformed_data(data, field):
    with pytest.raises(ValueError, match=field):
        ArchConfig.from_dict(data)


def test_decode_refuses_out_of_range_gene():
    space = get_space()
    genome = space.encode(space.smallest())
    genome[0] = 9
    with pytest.raises(ValueError, match=r"genome\[0\]"):
        space.decode(genome)


@pytest.mark.parametrize("name", sorted(SPACES))
@pytest.mark.parametrize("phi", [0, 1, 2])
def test_compound_scaling_follows_the_formula(name, phi):
    base = get_space(name)
    scaled = get_space(name, phi=phi)
    for b, s in zip(base.stages, scaled.stages, strict=True):
        assert s.out_channels == make_divisible(b.out_channels * 1.1**phi)
        assert s.out_channels % 8 == 0
        assert s.depth_choices == tuple(sorted({math.ceil(d * 1.2**phi) for d in b.depth_choices}))
        assert s.kernel_choices == b.kernel_choices and s.expand_choices == b.expand_choices
    for rb, rs in zip(base.resolutions, scaled.resolutions, strict=True):
        assert rs % 4 == 0
        assert abs(rs - rb * 1.15**phi) <= 2
    assert scaled.spec.feature_mix_channels == make_divisible(base.spec.feature_mix_channels * 1.1**phi)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_largest_macs_about_double_per_phi_step(name):
    from supernets import cost

    macs = [cost(get_space(name, phi=p), get_space(name, phi=p).largest()).macs for p in (0, 1, 2)]
    for a, b in itertools.pairwise(macs):
        assert 1.6 <= b / a <= 2.6, macs


def test_small_space_never_ends_on_a_1x1_feature_map():
    space = get_space()
    stride = space.spec.stem_stride
    for s in space.stages:
        stride *= s.stride
    assert min(space.resolutions) / stride > 1  # last map at least 2x2


def test_negative_phi_and_unknown_space_are_refused():
    with pytest.raises(ValueError, match="phi"):
        get_space(phi=-1)
    with pytest.raises(ValueError, match="allowed"):
        get_space("nope")


def test_canonical_makes_functionally_equal_archs_equal():
    space = get_space()
    rng = random.Random(0)
    arch = space.sample(rng)
    other = space.decode([g if i < 6 else rng.randrange(3) for i, g in enumerate(space.encode(arch))])
    if space.active_blocks(arch) == space.active_blocks(other):
        assert space.canonical(arch) == space.canonical(other)
    assert space.canonical(space.canonical(arch)) == space.canonical(arch)


@pytest.mark.parametrize("width, channels", [
    (1.0, (16, 16, 24, 40, 80, 112, 160, 960, 1280)),
    (1.2, (24, 24, 32, 48, 96, 136, 192, 1152, 1536)),  # OFA's make_divisible(base * 1.2, 8)
])
def test_width_multiplier_gives_ofa_channels_and_is_separate_from_phi(width, channels):
    spec = get_space("ofa_mbv3", width=width).spec
    got = (spec.stem_channels, spec.first_block_channels, *(s.out_channels for s in spec.stages),
           spec.final_expand_channels, spec.feature_mix_channels)
    assert got == channels and spec.width == width and spec.phi == 0
    scaled = get_space("ofa_mbv3", phi=1, width=width).spec
    assert scaled.width == width and scaled.phi == 1 and scaled.feature_mix_channels > channels[-1]


def test_ofa_resolutions_interpolate_between_four_anchors():
    space = get_space("ofa_mbv3")
    assert space.resolutions == tuple(range(128, 225, 4))
    assert space.anchor_resolutions == (128, 160, 192, 224)
    assert space.anchor_weights(160) == {160: 1.0}
    w = space.anchor_weights(140)
    assert set(w) == {128, 160} and w[128] == pytest.approx(0.625) and sum(w.values()) == pytest.approx(1.0)
    assert len(space.uniform_grid()) == 4 * 3  # the diagonal per anchor (28 px: the full 27 per resolution)
    assert len(get_space().uniform_grid()) == 4 * 27
