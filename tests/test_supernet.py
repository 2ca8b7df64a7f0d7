import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from supernets import Supernet, cost, get_space
from supernets.ops import DynamicBatchNorm2d
from supernets.static import StaticNet


def _trained_like(space, seed=0):
    """A supernet whose BN statistics are not the identity (so parity is a real check)."""
    torch.manual_seed(seed)
    net = Supernet(space, num_classes=10)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, DynamicBatchNorm2d | torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _archs(space, n=50):
    rng = random.Random(1234)
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n)]


def _check_parity(net, space, archs):
    gen = torch.Generator().manual_seed(0)
    for arch in archs:
        x = torch.randn(2, 3, arch.resolution, arch.resolution, generator=gen)
        net.set_active(arch)
        with torch.no_grad():
            expected = net(x)
            static = net.extract(arch)
            got = static(x)
        assert isinstance(static, StaticNet)
        scale = expected.abs().max().item()
        assert scale > 1e-3
        assert (got - expected).abs().max().item() <= 1e-5 * scale, arch
        c = cost(space, arch, 10)
        assert sum(p.numel() for p in static.parameters()) == c.params
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            static(x[:1])
        assert abs(counter.get_total_flops() / 2 - c.macs) <= 0.02 * c.macs


def test_extracted_subnet_matches_supernet_output_params_and_macs():
    space = get_space()
    net = _trained_like(space)
    _check_parity(net, space, _archs(space))


def test_parity_holds_after_reorganize_channels():
    space = get_space()
    net = _trained_like(space, seed=1)
    # make importance non-uniform so the permutation is not the identity
    with torch.no_grad():
        for blocks in net.stages:
            for block in blocks:
                block.project_conv.weight.mul_(torch.rand(1, block.project_conv.weight.shape[1], 1, 1) * 2)
    net.reorganize_channels()
    _check_parity(net, space, _archs(space, n=20))


def test_reorganize_channels_keeps_full_width_function_and_sorts_importance():
    space = get_space()
    net = _trained_like(space, seed=2)
    arch = space.largest()
    x = torch.randn(2, 3, arch.resolution, arch.resolution)
    with torch.no_grad():
        net.set_active(arch)
        before = net(x)
        net.reorganize_channels()
        after = net(x)
    assert (before - after).abs().max().item() <= 1e-5 * before.abs().max().item()
    block = net.stages[0][0]
    importance = block.project_conv.weight.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


def test_elastic_kernel_uses_learned_transform():
    space = get_space()
    net = _trained_like(space)
    dw = net.stages[0][0].depthwise
    crop = dw.weight[:8, :, 2:5, 2:5]
    assert torch.allclose(dw.active_filter(8, 3), crop)  # identity transforms at init
    with torch.no_grad():
        dw.transforms["5to3"].mul_(2.0)
    assert torch.allclose(dw.active_filter(8, 3), 2 * crop)


def test_set_active_refuses_an_invalid_arch():
    space = get_space()
    net = Supernet(space, 10)
    bad = space.largest().__class__(resolution=31, depths=(4,) * 5, kernel_sizes=(7,) * 20, expand_ratios=(6,) * 20)
    with pytest.raises(ValueError, match="resolution"):
        net.set_active(bad)


def test_activated_restores_previous_arch():
    space = get_space()
    net = Supernet(space, 10)
    with net.activated(space.smallest()):
        assert net.active_arch == space.smallest()
    assert net.active_arch == space.largest()


def test_supernet_trains_with_gradients_to_active_weights_only():
    space = get_space()
    net = Supernet(space, 10).train()
    arch = space.smallest()
    net.set_active(arch)
    x = torch.randn(4, 3, arch.resolution, arch.resolution)
    net(x).logsumexp(1).sum().backward()
    last = net.stages[0][3]  # depth 2 active: the 4th block never ran
    assert last.expand_conv.weight.grad is None
    grad = net.stages[0][0].expand_conv.weight.grad
    hidden = net.stages[0][0].hidden
    assert grad[:hidden].abs().sum() > 0 and grad[hidden:].abs().sum() == 0


@pytest.mark.parametrize("phi", [1, 2])
def test_scaled_supernet_extracts_correctly(phi):
    space = get_space(phi=phi)
    net = _trained_like(space)
    _check_parity(net, space, _archs(space, n=3))


def test_imagenet_space_parity_at_smallest_resolution():
    space = get_space("ofa_mbv3")
    net = _trained_like(space)
    _check_parity(net, space, [space.smallest()])


@pytest.mark.parametrize("kernel", [3, 5, 7])
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_conv_keeps_output_and_gradients_cropped_and_padded_explicitly(kernel, stride, monkeypatch):
    """On maps smaller than the filter, the taps that only meet zero padding are dropped (a 7x7 filter on a
    2x2 map runs as 3x3) and, when training on the CPU, the padding of a map smaller than the rest is written
    out: same output, same gradients for input and every filter weight as one plain convolution; on 2x2 maps
    the crop really happens, and the padding is written out there."""
    import torch.nn.functional as F

    from supernets.ops import depthwise_conv, reachable_crop

    pads = []
    real_pad = F.pad
    monkeypatch.setattr(F, "pad", lambda t, p, *a, **k: pads.append(tuple(t.shape[-2:])) or real_pad(t, p, *a, **k))
    torch.manual_seed(0)
    for size in range(1, 10):
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(2, 4, size, size + (size > 3)).contiguous(memory_format=layout).requires_grad_()
            w = torch.randn(4, 1, kernel, kernel, requires_grad=True)
            full = F.conv2d(x, w, None, stride, kernel // 2, 1, 4)
            full_grads = torch.autograd.grad(full.square().sum(), (x, w))
            out = depthwise_conv(x, w, stride)
            grads = torch.autograd.grad(out.square().sum(), (x, w))
            assert out.shape == full.shape
            torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)
            for g, ref in zip(grads, full_grads, strict=True):
                torch.testing.assert_close(g, ref, atol=1e-4, rtol=1e-4)
        if size == 2 and kernel > 3:
            assert reachable_crop(kernel, stride, 2, 2) == (kernel - 3) // 2
    assert (2, 2) in pads and all(min(shape) < 4 for shape in pads)
    with torch.no_grad():  # measuring: nothing written out
        pads.clear()
        depthwise_conv(torch.randn(2, 4, 2, 2), torch.randn(4, 1, kernel, kernel), stride)
        assert pads == []


def test_small_map_pointwise_convs_run_as_matrix_products_with_the_same_function(monkeypatch):
    """On the CPU in channels-last (how training and measurement run), 1x1 convolutions on maps of <= 4 pixels
    go through F.linear: none reaches F.conv2d, yet output and every gradient equal the convolution path's;
    and a full-width weight is used as is, not through a slice."""
    import torch.nn.functional as F

    import supernets.ops as ops

    space = get_space()
    net = _trained_like(space).train().to(memory_format=torch.channels_last)
    arch = space.largest()
    assert net.stages[0][0].expand_conv.active_weight(*net.stages[0][0].expand_conv.weight.shape[1::-1]) \
        is net.stages[0][0].expand_conv.weight
    x = torch.randn(4, 3, arch.resolution, arch.resolution).contiguous(memory_format=torch.channels_last)

    def run():
        torch.manual_seed(0)  # the same dropout mask both times
        net.zero_grad(set_to_none=True)
        out = net(x)
        out.logsumexp(1).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    small_convs = []
    conv2d, pixels = F.conv2d, ops.MATMUL_MAX_PIXELS

    def counting_conv2d(inp, weight, *args, **kwargs):
        if weight.shape[-1] == 1 and inp.shape[-1] * inp.shape[-2] <= pixels:
            small_convs.append(tuple(inp.shape))
        return conv2d(inp, weight, *args, **kwargs)

    monkeypatch.setattr(F, "conv2d", counting_conv2d)
    out, grads = run()
    assert small_convs == []
    monkeypatch.setattr(ops, "MATMUL_MAX_PIXELS", 0)
    ref_out, ref_grads = run()
    assert len(small_convs) > 10  # the convolution path really covers those layers
    torch.testing.assert_close(out, ref_out, atol=1e-4, rtol=1e-4)
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], atol=1e-4, rtol=1e-3, msg=name)
