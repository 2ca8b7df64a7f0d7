"""Dynamic ops: one set of max-size weights, sliced by prefix for the active width and kernel.

Weight sharing is `weight[:out, :in]` in one small method per op. The active kernel/width is set by
the owning block from a validated `ArchConfig`; `forward` only reads it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from supernets.space import se_mid_channels
from supernets.static import BN_EPS

# A 1x1 convolution on maps of at most this many pixels runs as a matrix product (see pointwise_conv)
MATMUL_MAX_PIXELS = 4


def leading(t: torch.Tensor, *sizes: int) -> torch.Tensor:
    """`t[:sizes[0], :sizes[1], ...]`, or `t` itself when that is all of it: a full-size slice still adds a
    view to the forward and a zero-filled copy of the gradient to the backward of every step."""
    if all(n == full for n, full in zip(sizes, t.shape, strict=False)):
        return t
    return t[tuple(slice(n) for n in sizes)]


def pointwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.conv2d(x, weight, bias)` for a 1x1 `weight`. A channels-last CPU tensor with small maps goes through
    F.linear instead: its memory is already the (pixels, channels) matrix, and oneDNN's convolution on
    2x2 and 1x1 maps is 1.3-2.5x slower, forward + backward, than the matrix product (same function)."""
    if (x.device.type == "cpu" and x.shape[-2] * x.shape[-1] <= MATMUL_MAX_PIXELS
            and x.is_contiguous(memory_format=torch.channels_last)):
        return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight, bias)


class DynamicPointConv(nn.Module):
    """1x1 conv whose input width follows the tensor and whose output width is chosen."""

    def __init__(self, max_in: int, max_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(max_out, max_in, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active_weight(self, in_channels: int, out_channels: int) -> torch.Tensor:
        return leading(self.weight, out_channels, in_channels)

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        return pointwise_conv(x, self.active_weight(x.shape[1], out_channels))


class DynamicDepthwiseConv(nn.Module):
    """Depthwise conv with elastic kernel: centre crop of the max kernel, then OFA's learned
    kernel-transform matrix per (bigger -> smaller) step, chained 7 -> 5 -> 3 (identity at init),
    so small kernels are not forced to equal the centre of the big one."""

    def __init__(self, max_channels: int, kernel_choices: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernel_choices, reverse=True))
        self.stride = stride
        kmax = self.kernels[0]
        self.weight = nn.Parameter(torch.empty(max_channels, 1, kmax, kmax))
        nn.init.kaiming_normal_(self.weight, mode="fan_in")  # fan_out would count all C channels
        self.transforms = nn.ParameterDict(
            {f"{big}to{small}": nn.Parameter(torch.eye(small * small))
             for big, small in zip(self.kernels, self.kernels[1:], strict=False)}
        )

    def active_filter(self, channels: int, kernel: int) -> torch.Tensor:
        weight = leading(self.weight, channels)
        for big, small in zip(self.kernels, self.kernels[1:], strict=False):
            if big <= kernel:
                break
            start = (big - small) // 2
            weight = weight[:, :, start:start + small, start:start + small]
            weight = (weight.reshape(channels, small * small) @ self.transforms[f"{big}to{small}"])
            weight = weight.reshape(channels, 1, small, small)
        return weight

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        return depthwise_conv(x, self.active_filter(x.shape[1], kernel), self.stride)


def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """`F.conv2d` of a k x k depthwise `weight` with padding k // 2, run the way oneDNN's CPU kernels are fastest:
    the taps that only meet padding dropped (reachable_crop), and, where the map is smaller than what is left
    of the filter and a gradient will be wanted, the padding written out: oneDNN's depthwise weight-gradient
    kernel takes no filter wider than 3 and no map smaller than the filter, and what it falls back to was
    ~15x slower on 2x2 maps here (docs/decisions.md). Same function either way."""
    kernel = weight.shape[-1]
    crop = reachable_crop(kernel, stride, x.shape[-2], x.shape[-1])
    if crop:
        weight = weight[:, :, crop:kernel - crop, crop:kernel - crop]
    size, pad = kernel - 2 * crop, kernel // 2 - crop
    if (pad and size <= 3 and min(x.shape[-2:]) < size + (-pad) % stride and x.device.type == "cpu"
            and torch.is_grad_enabled()):
        return F.conv2d(F.pad(x, [pad] * 4), weight, None, stride, 0, 1, x.shape[1])
    return F.conv2d(x, weight, None, stride, pad, 1, x.shape[1])


def reachable_crop(kernel: int, stride: int, height: int, width: int) -> int:
    """Taps to drop from each border of a `kernel` x `kernel` filter (padding k//2) that only ever meet the
    zero padding of an input this small: a 7x7 filter on a 2x2 map reads only its centre 3x3. Dropping
    them (and as much padding) gives the same output and gradients, and oneDNN's depthwise kernels then
    skip most of the work (a 7x7 backward on 2x2 maps was ~10x the 3x3 one)."""
    pad = kernel // 2
    crop = pad
    for size in (height, width):
        out = (size + 2 * pad - kernel) // stride + 1
        crop = min(crop, pad - stride * (out - 1), kernel - pad - size)
    return max(0, crop)


class DynamicBatchNorm2d(nn.Module):
    """BatchNorm over the first C channels of max-size statistics (updated in place through the
    slice). momentum=None means a cumulative average, which BN recalibration uses."""

    def __init__(self, max_channels: int, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(max_channels))
        self.bias = nn.Parameter(torch.zeros(max_channels))
        self.register_buffer("running_mean", torch.zeros(max_channels))
        self.register_buffer("running_var", torch.ones(max_channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(
            x, leading(self.running_mean, c), leading(self.running_var, c), leading(self.weight, c),
            leading(self.bias, c), self.training, factor, BN_EPS,
        )


class DynamicSqueezeExcite(nn.Module):
    """SE whose width follows the tensor; bottleneck = se_mid_channels(active width)."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        mid = se_mid_channels(max_channels)
        self.reduce_weight = nn.Parameter(torch.empty(mid, max_channels, 1, 1))
        self.reduce_bias = nn.Parameter(torch.zeros(mid))
        self.expand_weight = nn.Parameter(torch.empty(max_channels, mid, 1, 1))
        self.expand_bias = nn.Parameter(torch.zeros(max_channels))
        for w in (self.reduce_weight, self.expand_weight):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))

    def active_params(self, channels: int) -> tuple[torch.Tensor, ...]:
        mid = se_mid_channels(channels)
        return (
            leading(self.reduce_weight, mid, channels), leading(self.reduce_bias, mid),
            leading(self.expand_weight, channels, mid), leading(self.expand_bias, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The 1x1 convs of a squeezed (N, C, 1, 1) tensor are matrix products: as F.linear on (N, C) their
        # forward + backward runs ~2.5x faster on the CPU than oneDNN's 1x1 convolution (same function).
        rw, rb, ew, eb = self.active_params(x.shape[1])
        scale = x.mean((2, 3))
        scale = F.relu(F.linear(scale, rw.flatten(1), rb))
        scale = F.hardsigmoid(F.linear(scale, ew.flatten(1), eb))
        return x * scale[:, :, None, None]
