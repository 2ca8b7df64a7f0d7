"""MIT Once-for-All's MobileNetV3 supernet state dict <-> ours: the key map, the family check, the load.

OFA's `OFAMobileNetV3` (ofa_mbv3_d234_e346_k357_w1.0 / _w1.2 in its model zoo) has the layout of our
`ofa_mbv3` space module for module: first_conv -> blocks.0 (expand 1) -> blocks.1..20 (5 stages x 4
slots) -> final_expand_layer -> pool -> feature_mix_layer -> classifier. Every tensor maps to one of
ours under another name; the only value change is the kernel-transform matrix: OFA applies it as
`F.linear(w, M)` = w @ M.T, ours as w @ M, so ours is OFA's transposed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise

import torch

from supernets.space import SearchSpace

BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
OTHER_FAMILIES = {  # key prefix that only that family's state dict has -> its name in OFA's model zoo
    "input_stem.": "OFA ResNet50 (ofa_resnet50, OFAResNets)",
    "feature_mix_layer.bn.": "OFA ProxylessNAS (ofa_proxyless_d234_e346_k357_w1.3, OFAProxylessNASNets)",
}
SUPPORTED = "OFA MobileNetV3 (ofa_mbv3_d234_e346_k357_w1.0 / _w1.2, OFAMobileNetV3)"


class CheckpointMismatch(ValueError):
    """The state dict is not an OFA MobileNetV3 supernet of this space; the message names the tensors."""


@dataclass(frozen=True)
class TensorMap:
    ofa_key: str
    our_key: str
    transpose: bool = False  # kernel-transform matrices


def _bn(ofa: str, ours: str) -> Iterator[TensorMap]:
    for t in BN_TENSORS:
        yield TensorMap(f"{ofa}.{t}", f"{ours}.{t}")


def tensor_maps(space: SearchSpace) -> list[TensorMap]:
    """Every tensor of OFA's state dict and where it goes in ours (for `space`'s stages and depths)."""
    maps = [TensorMap("first_conv.conv.weight", "stem.0.weight"), *_bn("first_conv.bn", "stem.1"),
            TensorMap("blocks.0.conv.depth_conv.conv.weight", "first_block.depthwise.0.weight"),
            *_bn("blocks.0.conv.depth_conv.bn", "first_block.depthwise.1"),
            TensorMap("blocks.0.conv.point_linear.conv.weight", "first_block.project.0.weight"),
            *_bn("blocks.0.conv.point_linear.bn", "first_block.project.1")]
    index = 1
    for st, stage in enumerate(space.stages):
        kernels = sorted(stage.kernel_choices, reverse=True)
        for pos in range(stage.max_depth):
            ofa, ours = f"blocks.{index}.conv", f"stages.{st}.{pos}"
            maps += [TensorMap(f"{ofa}.inverted_bottleneck.conv.conv.weight", f"{ours}.expand_conv.weight"),
                     *_bn(f"{ofa}.inverted_bottleneck.bn.bn", f"{ours}.expand_bn"),
                     TensorMap(f"{ofa}.depth_conv.conv.conv.weight", f"{ours}.depthwise.weight"),
                     *_bn(f"{ofa}.depth_conv.bn.bn", f"{ours}.depthwise_bn")]
            maps += [TensorMap(f"{ofa}.depth_conv.conv.{big}to{small}_matrix",
                               f"{ours}.depthwise.transforms.{big}to{small}", transpose=True)
                     for big, small in pairwise(kernels)]
            if stage.use_se:
                maps += [TensorMap(f"{ofa}.depth_conv.se.fc.{part}.{t}", f"{ours}.se.{part}_{t}")
                         for part in ("reduce", "expand") for t in ("weight", "bias")]
            maps += [TensorMap(f"{ofa}.point_linear.conv.conv.weight", f"{ours}.project_conv.weight"),
                     *_bn(f"{ofa}.point_linear.bn.bn", f"{ours}.project_bn")]
            index += 1
    maps += [TensorMap("final_expand_layer.conv.weight", "head.final_expand.0.weight"),
             *_bn("final_expand_layer.bn", "head.final_expand.1"),
             TensorMap("feature_mix_layer.conv.weight", "head.feature_mix.weight"),
             TensorMap("classifier.linear.weight", "head.classifier.weight"),
             TensorMap("classifier.linear.bias", "head.classifier.bias")]
    return maps


def unwrap_state_dict(blob: object) -> dict[str, torch.Tensor]:
    """A plain state dict or OFA's `{"state_dict": ...}`; DataParallel's `module.` prefix removed."""
    if isinstance(blob, Mapping) and isinstance(blob.get("state_dict"), Mapping):
        blob = blob["state_dict"]
    if not isinstance(blob, Mapping) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise CheckpointMismatch("not a state dict (expected a dict of tensors, or one under 'state_dict')")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in blob.items()}


def check_family(state: Mapping[str, torch.Tensor]) -> None:
    """CheckpointMismatch naming the family when the state dict is another OFA network."""
    for prefix, family in OTHER_FAMILIES.items():
        if any(k.startswith(prefix) for k in state):
            raise CheckpointMismatch(f"this is an {family} checkpoint (it has {prefix}* tensors); "
                                     f"only {SUPPORTED} is supported")
    if "first_conv.conv.weight" not in state or not any(k.startswith("blocks.") for k in state):
        raise CheckpointMismatch(f"not an OFA supernet (no first_conv.conv.weight / blocks.* tensors); "
                                 f"supported: {SUPPORTED}")


def ofa_width_of(state: Mapping[str, torch.Tensor]) -> float | None:
    """The width multiplier a state dict was built with, read from its stem (16 -> 1.0, 24 -> 1.2)."""
    stem = state.get("first_conv.conv.weight")
    return {16: 1.0, 24: 1.2}.get(int(stem.shape[0])) if stem is not None else None


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def map_state_dict(state: Mapping[str, torch.Tensor], space: SearchSpace,
                   ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OFA's state dict -> ours, checked: every expected tensor present, nothing unexpected, every shape
    equal to ours (`ours` = a freshly built supernet's state dict, for shapes and the classifier width)."""
    check_family(state)
    maps = tensor_maps(space)
    expected = {m.ofa_key for m in maps}
    missing = [m.ofa_key for m in maps if m.ofa_key not in state]
    unexpected = sorted(k for k in state if k not in expected)
    problems = []
    if missing:
        problems.append(f"missing tensor(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s): {_listing(unexpected)}")
    out: dict[str, torch.Tensor] = {}
    shaped = []
    for m in maps:
        if m.ofa_key not in state:
            continue
        value = state[m.ofa_key].t() if m.transpose else state[m.ofa_key]
        if tuple(value.shape) != tuple(ours[m.our_key].shape):
            shown = tuple(state[m.ofa_key].shape)
            want = tuple(ours[m.our_key].t().shape if m.transpose else ours[m.our_key].shape)
            shaped.append(f"{m.ofa_key} {list(shown)} (expected {list(want)})")
            continue
        out[m.our_key] = value.detach().clone().contiguous().to(ours[m.our_key].dtype)
    if shaped:
        problems.append(f"mis-shaped tensor(s): {_listing(shaped, 4)}")
    if problems:
        raise CheckpointMismatch("; ".join(problems))
    return out


def to_ofa_state_dict(net_state: Mapping[str, torch.Tensor], space: SearchSpace) -> dict[str, torch.Tensor]:
    """Ours -> OFA's key names (the inverse map), e.g. to load our weights into the reference code."""
    return {m.ofa_key: (net_state[m.our_key].t() if m.transpose else net_state[m.our_key]).clone()
            for m in tensor_maps(space)}
