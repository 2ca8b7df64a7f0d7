import torch
from torchvision.models import mobilenet_v3_small

from supernets.torchvision_compat import from_torchvision_mobilenet_v3


def test_torchvision_mobilenet_v3_small_is_expressed_exactly():
    torch.manual_seed(0)
    ref = mobilenet_v3_small(num_classes=10)
    with torch.no_grad():  # non-trivial BN statistics
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    ref.eval()
    ours = from_torchvision_mobilenet_v3(ref, resolution=32)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 1e-3
    assert (expected - got).abs().max().item() <= 1e-5 * expected.abs().max().item()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
