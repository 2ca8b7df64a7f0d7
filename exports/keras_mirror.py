"""A native NHWC tf.keras mirror of a `supernets.static` module, built from its config and weights.

Why a mirror rather than a graph converter: TFLite wants NHWC, and converting an NCHW ONNX graph leaves
transposes everywhere. The mirror is exact by construction if the pitfalls are respected
(/work/shared/PITFALLS.md): BN is folded into the conv (no Keras epsilon default), padding is explicit
`ZeroPadding2D(k//2)` + "valid" (TF "same" differs from PyTorch at stride 2), hard-sigmoid is
relu6(x+3)/6, and conv weights are transposed (O, I, kh, kw) -> (kh, kw, I, O), depthwise
(C, 1, kh, kw) -> (kh, kw, C, 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from supernets.static import ConvBNAct, Head, MBConv, SqueezeExcite, StaticNet


def build_keras_model(model: nn.Module, resolution: int, in_channels: int) -> Any:
    """A keras.Model with input (1, r, r, C) NHWC computing what `model` computes on (1, C, r, r)."""
    import keras

    inputs = keras.Input(shape=(resolution, resolution, in_channels), batch_size=1, name="input")
    builder = _Builder()
    outputs = builder.apply(model, inputs)
    return keras.Model(inputs, outputs, name="mirror")


def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight and bias with BN (eval statistics) folded in; torch layout (O, I, kh, kw)."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        weight = conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
    return weight.double().numpy(), bias.double().numpy()


class _Builder:
    """Walks the static modules and applies the matching Keras layers (functional API)."""

    def __init__(self) -> None:
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}_{self._count}"

    def apply(self, module: nn.Module, x: Any) -> Any:
        if isinstance(module, StaticNet):
            x = self.apply(module.stem, x)
            x = self.apply(module.first_block, x)
            x = self.apply(module.blocks, x)
            return self.apply(module.head, x)
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
        raise TypeError(f"keras mirror: unsupported module {type(module).__name__}; supported: StaticNet, "
                        "ConvBNAct, MBConv, SqueezeExcite, Head, nn.Sequential of them")

    def activation(self, name: str | None, x: Any) -> Any:
        import keras

        if name is None:
            return x
        if name == "relu":
            return keras.layers.ReLU(name=self._name("relu"))(x)
        if name == "hswish":
            return self.hard_swish(x)
        raise ValueError(f"activation: unknown {name!r}")

    def hard_sigmoid(self, x: Any) -> Any:
        import keras

        # relu6(x + 3) / 6, PyTorch's definition (Keras 2 used 0.2x + 0.5)
        y = keras.layers.Rescaling(1.0, offset=3.0, name=self._name("hsig_add"))(x)
        y = keras.layers.ReLU(max_value=6.0, name=self._name("hsig_relu6"))(y)
        return keras.layers.Rescaling(1.0 / 6.0, name=self._name("hsig_div"))(y)

    def hard_swish(self, x: Any) -> Any:
        import keras

        return keras.layers.Multiply(name=self._name("hswish"))([x, self.hard_sigmoid(x)])

    def conv(self, conv: nn.Conv2d, weight: np.ndarray, bias: np.ndarray | None, x: Any) -> Any:
        import keras

        k = conv.kernel_size[0]
        stride = conv.stride[0]
        pad = conv.padding[0]
        # stride 1, odd k: TF "same" pads k//2 on each side, exactly PyTorch's padding (no PAD op needed);
        # stride 2: TF "same" pads asymmetrically, so pad explicitly (PITFALLS.md)
        same = stride == 1 and pad == k // 2 and k % 2 == 1
        if pad and not same:
            x = keras.layers.ZeroPadding2D(pad, name=self._name("pad"))(x)
        padding = "same" if same else "valid"
        depthwise = conv.groups > 1
        if depthwise and not (conv.groups == conv.in_channels == conv.out_channels):
            raise TypeError(f"keras mirror: grouped conv with groups={conv.groups} is not depthwise")
        use_bias = bias is not None
        if depthwise:
            layer = keras.layers.DepthwiseConv2D(k, stride, padding=padding, use_bias=use_bias,
                                                 name=self._name("dwconv"))
            kernel = weight.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        else:
            layer = keras.layers.Conv2D(conv.out_channels, k, stride, padding=padding, use_bias=use_bias,
                                        name=self._name("conv"))
            kernel = weight.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
        y = layer(x)
        layer.set_weights([kernel.astype(np.float32)] + ([bias.astype(np.float32)] if use_bias else []))
        return y

    def conv_bn_act(self, block: ConvBNAct, x: Any) -> Any:
        weight, bias = _fold_bn(block.conv, block.bn)
        return self.activation(block.activation, self.conv(block.conv, weight, bias, x))

    def plain_conv(self, conv: nn.Conv2d, x: Any) -> Any:
        weight = conv.weight.detach().double().numpy()
        bias = None if conv.bias is None else conv.bias.detach().double().numpy()
        return self.conv(conv, weight, bias, x)

    def squeeze_excite(self, se: SqueezeExcite, x: Any) -> Any:
        import keras

        s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=self._name("se_pool"))(x)
        s = keras.layers.ReLU(name=self._name("se_relu"))(self.plain_conv(se.reduce, s))
        s = self.hard_sigmoid(self.plain_conv(se.expand, s))
        return keras.layers.Multiply(name=self._name("se_scale"))([x, s])

    def mbconv(self, block: MBConv, x: Any) -> Any:
        import keras

        y = x if block.expand is None else self.conv_bn_act(block.expand, x)
        y = self.conv_bn_act(block.depthwise, y)
        if block.se is not None:
            y = self.squeeze_excite(block.se, y)
        y = self.conv_bn_act(block.project, y)
        return keras.layers.Add(name=self._name("residual"))([x, y]) if block.use_residual else y

    def head(self, head: Head, x: Any) -> Any:
        import keras

        x = self.conv_bn_act(head.final_expand, x)
        x = keras.layers.GlobalAveragePooling2D(keepdims=True, name=self._name("pool"))(x)
        x = self.hard_swish(self.plain_conv(head.feature_mix, x))
        x = keras.layers.Flatten(name=self._name("flatten"))(x)
        dense = keras.layers.Dense(head.classifier.out_features, name=self._name("classifier"))
        y = dense(x)
        dense.set_weights([head.classifier.weight.detach().numpy().T.copy(),
                           head.classifier.bias.detach().numpy().copy()])
        return y
