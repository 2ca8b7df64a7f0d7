"""The elastic supernet: OFA-MobileNetV3 with elastic depth, kernel, expand ratio and resolution."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from supernets.arch import ArchConfig
from supernets.ops import (
    DynamicBatchNorm2d,
    DynamicDepthwiseConv,
    DynamicPointConv,
    DynamicSqueezeExcite,
    pointwise_conv,
)
from supernets.space import SearchSpace, StageSpec, hidden_channels, se_mid_channels
from supernets.static import ConvBNAct, Head, MBConv, make_activation


class DynamicMBConv(nn.Module):
    """An inverted-residual block whose kernel and expand ratio are chosen by `set_choice`."""

    def __init__(self, in_channels: int, stage: StageSpec, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = stage.out_channels
        self.stride = stride
        self.use_se = stage.use_se
        self.activation_name = stage.activation
        self.kernel_choices = stage.kernel_choices
        self.expand_choices = stage.expand_choices
        max_hidden = hidden_channels(in_channels, max(stage.expand_choices))
        self.expand_conv = DynamicPointConv(in_channels, max_hidden)
        self.expand_bn = DynamicBatchNorm2d(max_hidden)
        self.depthwise = DynamicDepthwiseConv(max_hidden, stage.kernel_choices, stride)
        self.depthwise_bn = DynamicBatchNorm2d(max_hidden)
        self.se = DynamicSqueezeExcite(max_hidden) if stage.use_se else None
        self.project_conv = DynamicPointConv(max_hidden, stage.out_channels)
        self.project_bn = nn.BatchNorm2d(stage.out_channels)
        self.activation = make_activation(stage.activation)
        self.use_residual = stride == 1 and in_channels == stage.out_channels
        self.kernel = max(stage.kernel_choices)
        self.hidden = max_hidden

    def set_choice(self, kernel: int, expand_ratio: int) -> None:
        if kernel not in self.kernel_choices or expand_ratio not in self.expand_choices:
            raise ValueError(
                f"block choice: kernel {kernel} / expand {expand_ratio} not in "
                f"{self.kernel_choices} / {self.expand_choices}"
            )
        self.kernel = kernel
        self.hidden = hidden_channels(self.in_channels, expand_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(self.expand_bn(self.expand_conv(x, self.hidden)))
        y = self.activation(self.depthwise_bn(self.depthwise(y, self.kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y, self.out_channels))
        return x + y if self.use_residual else y

    @torch.no_grad()
    def extract(self) -> MBConv:
        """A static MBConv with the active kernel and width, weights copied."""
        h = self.hidden
        block = MBConv(self.in_channels, self.out_channels, h, self.kernel, self.stride, self.use_se,
                       self.activation_name)
        if block.expand is None:  # expand ratio 1 never occurs in elastic stages; keep the contract
            raise RuntimeError("elastic blocks always expand")
        block.expand.conv.weight.copy_(self.expand_conv.active_weight(self.in_channels, h))
        _copy_bn(block.expand.bn, self.expand_bn, h)
        block.depthwise.conv.weight.copy_(self.depthwise.active_filter(h, self.kernel))
        _copy_bn(block.depthwise.bn, self.depthwise_bn, h)
        if self.se is not None and block.se is not None:
            rw, rb, ew, eb = self.se.active_params(h)
            block.se.reduce.weight.copy_(rw)
            block.se.reduce.bias.copy_(rb)
            block.se.expand.weight.copy_(ew)
            block.se.expand.bias.copy_(eb)
        block.project.conv.weight.copy_(self.project_conv.active_weight(h, self.out_channels))
        block.project.bn.load_state_dict(self.project_bn.state_dict())
        return block

    @torch.no_grad()
    def reorganize_channels(self) -> None:
        """Sort hidden channels (and SE bottleneck channels) by importance, most important first,
        so narrower sub-networks keep the channels that matter. The full-width function is
        unchanged: the same permutation is applied on both sides of every hidden tensor."""
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        order = torch.argsort(importance, descending=True)
        self.expand_conv.weight.copy_(self.expand_conv.weight[order])
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(self.expand_bn, name)
            t.copy_(t[order])
        self.depthwise.weight.copy_(self.depthwise.weight[order])
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(self.depthwise_bn, name)
            t.copy_(t[order])
        if self.se is not None:
            self.se.reduce_weight.copy_(self.se.reduce_weight[:, order])
            self.se.expand_weight.copy_(self.se.expand_weight[order])
            self.se.expand_bias.copy_(self.se.expand_bias[order])
            mid_order = torch.argsort(self.se.expand_weight.abs().sum(dim=(0, 2, 3)), descending=True)
            self.se.reduce_weight.copy_(self.se.reduce_weight[mid_order])
            self.se.reduce_bias.copy_(self.se.reduce_bias[mid_order])
            self.se.expand_weight.copy_(self.se.expand_weight[:, mid_order])
        self.project_conv.weight.copy_(self.project_conv.weight[:, order])


def _head_forward(head: Head, x: torch.Tensor) -> torch.Tensor:
    """`head(x)` with its 1x1 convolutions through `pointwise_conv` (see Supernet.forward_head)."""
    expand = head.final_expand
    x = expand[2](expand.bn(pointwise_conv(x, expand.conv.weight)))
    x = x.mean((2, 3), keepdim=True)
    x = pointwise_conv(x, head.feature_mix.weight, head.feature_mix.bias)
    x = torch.flatten(head.mix_activation(x), 1)
    return head.classifier(head.dropout(x))


def _copy_bn(dst: nn.BatchNorm2d, src: DynamicBatchNorm2d, channels: int) -> None:
    dst.weight.copy_(src.weight[:channels])
    dst.bias.copy_(src.bias[:channels])
    dst.running_mean.copy_(src.running_mean[:channels])
    dst.running_var.copy_(src.running_var[:channels])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class Supernet(nn.Module):
    """One set of weights for every sub-network of `space`. `set_active(arch)` selects one."""

    def __init__(self, space: SearchSpace, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        spec = space.spec
        self.space = space
        self.num_classes = num_classes
        self.stem = ConvBNAct(spec.in_channels, spec.stem_channels, 3, spec.stem_stride, activation="hswish")
        self.first_block = MBConv(spec.stem_channels, spec.first_block_channels, spec.stem_channels, 3, 1,
                                  False, "relu")
        stages = []
        in_ch = spec.first_block_channels
        for stage in spec.stages:
            blocks = []
            for pos in range(stage.max_depth):
                blocks.append(DynamicMBConv(in_ch, stage, stage.stride if pos == 0 else 1))
                in_ch = stage.out_channels
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.head = Head(in_ch, spec.final_expand_channels, spec.feature_mix_channels, num_classes, dropout)
        self._arch = space.largest()
        self.set_active(self._arch)

    @property
    def active_arch(self) -> ArchConfig:
        return self._arch

    def set_active(self, arch: ArchConfig) -> None:
        self.space.validate(arch)
        for st, blocks in enumerate(self.stages):
            for pos, slot in enumerate(self.space.stage_slots(st)):
                blocks[pos].set_choice(arch.kernel_sizes[slot], arch.expand_ratios[slot])
        self._arch = arch

    @contextmanager
    def activated(self, arch: ArchConfig) -> Iterator[Supernet]:
        """Temporarily activate `arch`, restoring the previous sub-network afterwards."""
        previous = self._arch
        self.set_active(arch)
        try:
            yield self
        finally:
            self.set_active(previous)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for blocks, depth in zip(self.stages, self._arch.depths, strict=True):
            for block in blocks[:depth]:
                x = block(x)
        return self.forward_head(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """`self.head(x)`, with its two 1x1 convolutions (the last, smallest maps and the pooled 1x1 features)
        through `pointwise_conv`: the same function, faster on the CPU."""
        return _head_forward(self.head, x)

    @torch.no_grad()
    def extract(self, arch: ArchConfig | None = None) -> nn.Module:
        """A plain static nn.Module computing exactly what this supernet computes for `arch`."""
        from copy import deepcopy

        from supernets.static import StaticNet

        arch = self._arch if arch is None else arch
        with self.activated(arch):
            blocks = [block.extract() for blocks, depth in zip(self.stages, arch.depths, strict=True)
                      for block in blocks[:depth]]
            net = StaticNet(deepcopy(self.stem), deepcopy(self.first_block), blocks, deepcopy(self.head),
                            arch.resolution)
        net.train(self.training)
        return net

    @torch.no_grad()
    def reorganize_channels(self) -> None:
        for blocks in self.stages:
            for block in blocks:
                block.reorganize_channels()

    def dynamic_batchnorms(self) -> list[nn.Module]:
        """Every BN whose statistics depend on the active sub-network (for recalibration)."""
        return [m for m in self.modules() if isinstance(m, DynamicBatchNorm2d | nn.BatchNorm2d)]


__all__ = ["DynamicMBConv", "Supernet", "se_mid_channels"]
