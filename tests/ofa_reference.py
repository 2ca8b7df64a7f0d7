"""Random-init supernets of MIT's reference implementation (the `ofa` package), made to be compared with.

A freshly built OFAMobileNetV3 has identity kernel-transform matrices and BN statistics 0/1, on which a
wrong mapping can pass (an identity matrix equals its transpose; near-constant logits hide anything).
`reference_supernet` randomises the matrices and the BN affine parameters, then calibrates the BN
statistics on random batches, so logits move with the input and every tensor's mapping matters.
"""

from __future__ import annotations

from pathlib import Path

import torch

OFA_CHOICES = {"ks_list": [3, 5, 7], "expand_ratio_list": [3, 4, 6], "depth_list": [2, 3, 4]}


def reference_supernet(width: float, seed: int = 0, num_classes: int = 1000):
    """OFAMobileNetV3 (eval mode, dropout 0) with random transforms, BN affine and calibrated BN statistics."""
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3

    torch.manual_seed(seed)
    net = OFAMobileNetV3(n_classes=num_classes, width_mult=width, dropout_rate=0.0, **OFA_CHOICES)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("_matrix"):
                tensor.copy_(torch.eye(tensor.shape[0]) + 0.3 * torch.randn_like(tensor))
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration batches
        net.train()
        for _ in range(4):
            net(torch.randn(8, 3, 160, 160))
    net.eval()
    return net


def save_checkpoint(net, path: Path, wrapped: bool = True) -> Path:
    """As OFA's model zoo publishes it: {"state_dict": ...} (or a plain state dict)."""
    state = net.state_dict()
    torch.save({"state_dict": state} if wrapped else state, path)
    return path
