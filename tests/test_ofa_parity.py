"""Parity with MIT's reference implementation: an OFAMobileNetV3 imported with `factory import ofa`
computes what the `ofa` package computes, as a supernet, as an extracted network and as exported files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ofa_reference import reference_supernet, save_checkpoint

from factory.cli import cli

pytest.importorskip("ofa")

SUBNETS = 20
TOLERANCE = 1e-4  # of how much the logits move between two different inputs
WIDTHS = (1.0, 1.2)


_IMPORTED: dict[float, tuple] = {}


def _import(width: float, tmp_path_factory) -> tuple:
    """(reference OFA net, our supernet loaded from the run folder `factory import ofa` wrote, run path);
    once per width for the module."""
    from factory.run import load_run

    if width not in _IMPORTED:
        folder = tmp_path_factory.mktemp(f"ofa_w{width}")
        ref = reference_supernet(width, seed=int(width * 10))
        ckpt = save_checkpoint(ref, folder / "ofa.pth")
        result = CliRunner().invoke(cli, ["import", "ofa", str(ckpt), "--width", f"{width:.1f}", "--out",
                                          str(folder / "run")])
        assert result.exit_code == 0, result.output
        _IMPORTED[width] = (ref, load_run(folder / "run").supernet, folder / "run")
    return _IMPORTED[width]


@pytest.fixture(scope="module", params=WIDTHS, ids=lambda w: f"w{w}")
def imported(request, tmp_path_factory):
    return _import(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def imported_w10(tmp_path_factory):
    return _import(1.0, tmp_path_factory)


def _activate(ref, arch) -> None:
    ref.set_active_subnet(ks=list(arch.kernel_sizes), e=list(arch.expand_ratios), d=list(arch.depths))


def relative_gap(reference_logits: torch.Tensor, our_logits: torch.Tensor) -> tuple[float, float]:
    """(max |ours - reference| / how far the reference logits move between the two inputs, that movement)."""
    movement = float((reference_logits[0] - reference_logits[1]).abs().max())
    return float((our_logits - reference_logits).abs().max()) / movement, movement


def random_cases(space, n: int, seed: int):
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        arch = space.sample(rng)
        yield arch, torch.randn(2, 3, arch.resolution, arch.resolution, generator=gen)


def test_supernet_forward_matches_reference_on_random_subnetworks(imported):
    ref, ours, _ = imported
    worst = 0.0
    resolutions = set()
    for arch, x in random_cases(ours.space, SUBNETS, seed=1):
        _activate(ref, arch)
        ours.set_active(arch)
        with torch.no_grad():
            gap, movement = relative_gap(ref(x), ours(x))
        assert movement > 1e-3, f"{arch}: logits barely move ({movement:.2g}); the comparison would prove nothing"
        assert gap <= TOLERANCE, f"{arch}: max logit difference {gap:.3g} x the logit movement"
        worst = max(worst, gap)
        resolutions.add(arch.resolution)
    assert len(resolutions) >= 8  # random resolutions across OFA's 128-224 px
    print(f"largest supernet difference: {worst:.3g} x logit movement")


def test_extracted_network_matches_reference_active_subnet(imported):
    ref, ours, _ = imported
    worst = 0.0
    for arch, x in random_cases(ours.space, SUBNETS, seed=2):
        _activate(ref, arch)
        static_ref = ref.get_active_subnet(preserve_weight=True).eval()
        static_ours = ours.extract(arch).eval()
        with torch.no_grad():
            gap, _ = relative_gap(static_ref(x), static_ours(x))
        assert gap <= TOLERANCE, f"{arch}: extracted vs get_active_subnet differ by {gap:.3g} x movement"
        worst = max(worst, gap)
    print(f"largest extracted-network difference: {worst:.3g} x logit movement")


def test_a_wrong_mapping_is_caught(imported):
    """One kernel-transform matrix left untransposed (the easy mistake: OFA applies it as w @ M.T) must
    fail the same comparison, or the parity tests above could not catch a wrong mapping."""
    ref, ours, _ = imported
    key = "stages.1.0.depthwise.transforms.7to5"
    broken = type(ours)(ours.space, ours.num_classes, dropout=0.0)
    state = ours.state_dict()
    state[key] = state[key].t().contiguous()
    broken.load_state_dict(state)
    broken.eval()
    for arch, x in random_cases(ours.space, 5, seed=3):
        kernels = list(arch.kernel_sizes)
        kernels[ours.space.stage_slots(1)[0]] = 5  # the broken block runs a 5x5 kernel
        arch = type(arch)(arch.resolution, arch.depths, tuple(kernels), arch.expand_ratios)
        _activate(ref, arch)
        broken.set_active(arch)
        ours.set_active(arch)
        with torch.no_grad():
            wrong, _ = relative_gap(ref(x), broken(x))
            right, _ = relative_gap(ref(x), ours(x))
        assert right <= TOLERANCE < wrong, (right, wrong)


@pytest.mark.parametrize("fmt", ["onnx", "openvino", "tflite"])
def test_exported_subnetwork_matches_reference(imported_w10, fmt, tmp_path: Path):
    """One width is enough for the exporters (the mapping itself is checked at both)."""
    from exports.convert import convert
    from exports.runtime import load_session
    from exports.verify import PARITY_TOLERANCE

    ref, ours, _ = imported_w10
    arch = next(a for a, _ in random_cases(ours.space, 50, seed=4) if a.resolution <= 176)
    _activate(ref, arch)
    x = torch.randn(3, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ref.get_active_subnet(preserve_weight=True).eval()(x).numpy()
    path = convert(ours.extract(arch).eval(), fmt, "fp32", tmp_path, resolution=arch.resolution)
    session = load_session(path, threads=1)
    got = np.concatenate([session.run(x[i:i + 1].numpy()) for i in range(len(x))])
    relative = float(np.abs(got - expected).max() / np.abs(expected).max())
    assert relative <= PARITY_TOLERANCE["fp32"], f"{fmt}: {relative:.3g} x logit scale"
    print(f"{fmt}: max difference {relative:.3g} x logit scale")
