"""Express torchvision's MobileNetV3 with our static modules, weights copied.

Why: the specialization benchmark compares our picks with a hand-picked torchvision
mobilenet_v3_small. Expressed as a `StaticNet`, it goes through exactly the same exporters and
runtimes (including the NHWC TensorFlow mirror for TFLite), so latencies are measured like for like.
"""

from __future__ import annotations

import torch
from torch import nn

from supernets.static import BN_EPS, ConvBNAct, Head, MBConv, StaticNet


def _activation_name(module: nn.Module | None) -> str | None:
    if module is None:
        return None
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Hardswish):
        return "hswish"
    raise ValueError(f"unsupported activation {type(module).__name__}")


@torch.no_grad()
def _copy_conv_bn(dst: ConvBNAct, src: nn.Sequential) -> None:
    conv, bn = src[0], src[1]
    dst.conv.weight.copy_(conv.weight)
    dst.bn.weight.copy_(bn.weight)
    dst.bn.bias.copy_(bn.bias)
    dst.bn.running_mean.copy_(bn.running_mean)
    # torchvision uses eps=1e-3; fold the difference into the variance so eps=1e-5 computes the same
    dst.bn.running_var.copy_(bn.running_var + bn.eps - BN_EPS)


def _conv_bn_act(src: nn.Sequential) -> ConvBNAct:
    conv = src[0]
    act = _activation_name(src[2] if len(src) > 2 else None)
    out = ConvBNAct(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0], conv.groups, act)
    _copy_conv_bn(out, src)
    return out


@torch.no_grad()
def _block(src: nn.Module) -> MBConv:
    layers = list(src.block)
    expand = layers.pop(0) if layers[0][0].groups == 1 else None
    depthwise = layers.pop(0)
    se = layers.pop(0) if type(layers[0]).__name__ == "SqueezeExcitation" else None
    project = layers.pop(0)
    dw_conv = depthwise[0]
    in_ch = expand[0].in_channels if expand is not None else dw_conv.in_channels
    block = MBConv(in_ch, project[0].out_channels, dw_conv.out_channels, dw_conv.kernel_size[0], dw_conv.stride[0],
                   se is not None, _activation_name(depthwise[2]) or "relu")
    if block.use_residual != src.use_res_connect:
        raise ValueError("residual layout differs from torchvision's")
    if expand is not None:
        _copy_conv_bn(block.expand, expand)
    _copy_conv_bn(block.depthwise, depthwise)
    if se is not None:
        block.se.reduce.weight.copy_(se.fc1.weight)
        block.se.reduce.bias.copy_(se.fc1.bias)
        block.se.expand.weight.copy_(se.fc2.weight)
        block.se.expand.bias.copy_(se.fc2.bias)
    _copy_conv_bn(block.project, project)
    return block


@torch.no_grad()
def from_torchvision_mobilenet_v3(model: nn.Module, resolution: int) -> StaticNet:
    """A StaticNet computing what `torchvision.models.mobilenet_v3_{small,large}` computes (eval mode)."""
    features = list(model.features)
    stem = _conv_bn_act(features[0])
    blocks = [_block(b) for b in features[1:-1]]
    last = features[-1]
    lin1, lin2 = model.classifier[0], model.classifier[3]
    head = Head(last[0].in_channels, last[0].out_channels, lin1.out_features, lin2.out_features,
                dropout=model.classifier[2].p, mix_bias=True)
    _copy_conv_bn(head.final_expand, last)
    head.feature_mix.weight.copy_(lin1.weight[:, :, None, None])
    head.feature_mix.bias.copy_(lin1.bias)
    head.classifier.weight.copy_(lin2.weight)
    head.classifier.bias.copy_(lin2.bias)
    return StaticNet(stem, blocks[0], blocks[1:], head, resolution).eval()
