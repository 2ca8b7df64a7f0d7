"""Plain static layers: what `Supernet.extract` returns and what exporters walk.

Every module here is an ordinary `nn.Conv2d` / `nn.BatchNorm2d` / `nn.Linear` composition, so an
extracted sub-network exports with `torch.onnx.export` and mirrors one to one in TensorFlow ops.
"""

from __future__ import annotations

import torch
from torch import nn

from supernets.space import se_mid_channels

BN_EPS = 1e-5


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "hswish":
        return nn.Hardswish()
    raise ValueError(f"activation: unknown {name!r}; allowed: 'relu', 'hswish'")


class ConvBNAct(nn.Sequential):
    """conv -> BN -> optional activation, padding k//2 (exporters pad explicitly to match)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: str | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=BN_EPS),
        ]
        if activation is not None:
            layers.append(make_activation(activation))
        super().__init__(*layers)

    @property
    def conv(self) -> nn.Conv2d:
        return self[0]

    @property
    def bn(self) -> nn.BatchNorm2d:
        return self[1]

    @property
    def activation(self) -> str | None:
        if len(self) < 3:
            return None
        return "relu" if isinstance(self[2], nn.ReLU) else "hswish"


class SqueezeExcite(nn.Module):
    """x * hardsigmoid(W2 relu(W1 mean(x)))."""

    def __init__(self, channels: int, mid_channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid_channels, 1, bias=True)
        self.expand = nn.Conv2d(mid_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = torch.relu(self.reduce(scale))
        scale = nn.functional.hardsigmoid(self.expand(scale))
        return x * scale


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (+ identity)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int,
        kernel_size: int,
        stride: int,
        use_se: bool,
        activation: str,
    ) -> None:
        super().__init__()
        self.expand = None if hidden == in_channels else ConvBNAct(in_channels, hidden, 1, activation=activation)
        self.depthwise = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, activation=activation)
        self.se = SqueezeExcite(hidden, se_mid_channels(hidden)) if use_se else None
        self.project = ConvBNAct(hidden, out_channels, 1)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.use_residual else y


class Head(nn.Module):
    """final 1x1 expand -> global average pool -> 1x1 feature mix (hswish) -> dropout -> linear."""

    def __init__(self, in_channels: int, final_channels: int, mix_channels: int, num_classes: int,
                 dropout: float = 0.1, mix_bias: bool = False) -> None:
        super().__init__()
        self.final_expand = ConvBNAct(in_channels, final_channels, 1, activation="hswish")
        # OFA's feature mix has no bias; mix_bias=True lets torchvision's MobileNetV3 (Linear with bias)
        # be expressed with the same modules, so it exports through the same mirrors.
        self.feature_mix = nn.Conv2d(final_channels, mix_channels, 1, bias=mix_bias)
        self.mix_activation = nn.Hardswish()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(mix_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_expand(x)
        x = x.mean((2, 3), keepdim=True)
        x = self.mix_activation(self.feature_mix(x))
        x = torch.flatten(x, 1)
        return self.classifier(self.dropout(x))


class StaticNet(nn.Module):
    """An extracted sub-network: stem -> first block -> MBConv blocks -> head. Input NCHW."""

    def __init__(self, stem: ConvBNAct, first_block: MBConv, blocks: list[MBConv], head: Head,
                 resolution: int) -> None:
        super().__init__()
        self.stem = stem
        self.first_block = first_block
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        return self.head(self.blocks(x))
