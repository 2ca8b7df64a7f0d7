"""A native NHWC TensorFlow graph mirroring a `supernets.static` module, its weights as graph constants.

Why a mirror rather than a graph converter: TFLite wants NHWC, and converting an NCHW ONNX graph leaves
transposes everywhere. The mirror is exact by construction if the pitfalls are respected
(/work/shared/PITFALLS.md): BN is folded into the conv (no Keras epsilon default), padding is explicit
(`tf.pad` + "VALID": TF "SAME" differs from PyTorch at stride 2), hard-sigmoid is relu6(x+3)/6, and
conv weights are transposed (O, I, kh, kw) -> (kh, kw, I, O), depthwise (C, 1, kh, kw) -> (kh, kw, C, 1).

Plain tf ops traced once, not Keras layers: no layer objects, no variables to freeze, no autograph;
the converter gets the same TFLite ops from it at half the cost a model (docs/decisions.md 2026-12-01,
third session).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from supernets.static import ConvBNAct, Head, MBConv, SqueezeExcite, StaticNet


def concrete_function(tf: Any, model: nn.Module, resolution: int, in_channels: int) -> Any:
    """A concrete tf.function from input (1, r, r, C) NHWC to what `model` computes on (1, C, r, r)."""
    mirror = _Mirror(tf)
    signature = tf.TensorSpec([1, resolution, resolution, in_channels], tf.float32, name="input")
    return tf.function(lambda x: mirror.apply(model, x), autograph=False).get_concrete_function(signature)


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight and bias with BN (eval statistics) folded in; torch layout (O, I, kh, kw)."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
    return weight.double().numpy(), bias.double().numpy()


class _Mirror:
    """Walks the static modules and emits the matching tf ops (called while the function is traced)."""

    def __init__(self, tf: Any) -> None:
        self.tf = tf

    def constant(self, value: np.ndarray) -> Any:
        return self.tf.constant(np.asarray(value, dtype=np.float32))

    def apply(self, module: nn.Module, x: Any) -> Any:
        if isinstance(module, StaticNet):
            for part in (module.stem, module.first_block, module.blocks, module.head):
                x = self.apply(part, x)
            return x
        if isinstance(module, ConvBNAct):
            return self.conv_bn_act(module, x)
        if isinstance(module, MBConv):
            return self.mbconv(module, x)
        if isinstance(module, SqueezeExcite):
            return self.squeeze_excite(module, x)
        if isinstance(module, Head):
            return self.head(module, x)
        if isinstance(module, nn.Sequential):
            for child in module:
                x = self.apply(child, x)
            return x
        if isinstance(module, nn.Identity | nn.Dropout):
            return x
        raise TypeError(f"tf mirror: unsupported module {type(module).__name__}; supported: StaticNet, "
                        "ConvBNAct, MBConv, SqueezeExcite, Head, nn.Sequential of them")

    def activation(self, name: str | None, x: Any) -> Any:
        if name is None:
            return x
        if name == "relu":
            return self.tf.nn.relu(x)
        if name == "hswish":
            return x * self.hard_sigmoid(x)
        raise ValueError(f"activation: unknown {name!r}")

    def hard_sigmoid(self, x: Any) -> Any:
        return self.tf.nn.relu6(x + 3.0) * (1.0 / 6.0)  # PyTorch's definition (Keras 2 used 0.2x + 0.5)

    def conv(self, conv: nn.Conv2d, weight: np.ndarray, bias: np.ndarray | None, x: Any) -> Any:
        tf = self.tf
        k, stride, pad = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        # stride 1, odd k: TF "SAME" pads k//2 on each side, exactly PyTorch's padding (no PAD op needed);
        # stride 2: TF "SAME" pads asymmetrically, so pad explicitly (PITFALLS.md)
        same = stride == 1 and pad == k // 2 and k % 2 == 1
        if pad and not same:
            x = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        padding = "SAME" if same else "VALID"
        if conv.groups > 1:
            if not conv.groups == conv.in_channels == conv.out_channels:
                raise TypeError(f"tf mirror: grouped conv with groups={conv.groups} is not depthwise")
            kernel = self.constant(weight.transpose(2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            y = tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], padding)
        else:
            kernel = self.constant(weight.transpose(2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O)
            y = tf.nn.conv2d(x, kernel, stride, padding)
        return y if bias is None else tf.nn.bias_add(y, self.constant(bias))

    def conv_bn_act(self, block: ConvBNAct, x: Any) -> Any:
        weight, bias = fold_bn(block.conv, block.bn)
        return self.activation(block.activation, self.conv(block.conv, weight, bias, x))

    def plain_conv(self, conv: nn.Conv2d, x: Any) -> Any:
        weight = conv.weight.detach().double().numpy()
        bias = None if conv.bias is None else conv.bias.detach().double().numpy()
        return self.conv(conv, weight, bias, x)

    def squeeze_excite(self, se: SqueezeExcite, x: Any) -> Any:
        s = self.tf.reduce_mean(x, [1, 2], keepdims=True)
        s = self.tf.nn.relu(self.plain_conv(se.reduce, s))
        return x * self.hard_sigmoid(self.plain_conv(se.expand, s))

    def mbconv(self, block: MBConv, x: Any) -> Any:
        y = x if block.expand is None else self.conv_bn_act(block.expand, x)
        y = self.conv_bn_act(block.depthwise, y)
        if block.se is not None:
            y = self.squeeze_excite(block.se, y)
        y = self.conv_bn_act(block.project, y)
        return x + y if block.use_residual else y

    def head(self, head: Head, x: Any) -> Any:
        tf = self.tf
        x = self.conv_bn_act(head.final_expand, x)
        x = tf.reduce_mean(x, [1, 2], keepdims=True)
        x = self.activation("hswish", self.plain_conv(head.feature_mix, x))
        x = tf.reshape(x, [1, -1])
        weight = head.classifier.weight.detach().numpy().T
        return tf.matmul(x, self.constant(weight)) + self.constant(head.classifier.bias.detach().numpy())
