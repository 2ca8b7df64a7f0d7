"""Packages exported once per test session and shared by the export / package / verify / classify tests.

Session fixtures defined in one test module are not visible in another, and conftest.py is shared by
the whole team, so the packages are cached on disk under pytest's session base temp: whichever module
asks first exports, the others reuse the folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest

LATENCY_REPEATS = 10  # figures are not asserted in unit tests; keep the gate's timing cheap


def shared_package(tmp_path_factory: pytest.TempPathFactory, run_dir: Path, name: str, *, arch: str = "min",
                   formats: tuple[str, ...] = ("onnx", "tflite", "openvino"), precision: str = "fp32") -> Path:
    import torch

    from factory.ship.export import export_package

    out = tmp_path_factory.getbasetemp() / "export_packages" / name
    if (out / "manifest.json").is_file():
        return out
    torch.set_num_threads(1)
    return export_package(run_dir, arch, formats, precision, out, latency_repeats=LATENCY_REPEATS).path


def validation_pngs(tmp_path_factory: pytest.TempPathFactory, run_dir: Path, n: int = 100) -> list[Path]:
    """The first `n` validation images of the run as PNG files (what an app would classify)."""
    from PIL import Image

    from factory.run import load_run

    folder = tmp_path_factory.getbasetemp() / "export_packages" / f"val_png_{n}"
    paths = [folder / f"{i:03d}.png" for i in range(n)]
    if all(p.is_file() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    images = load_run(run_dir).dataset().val.images[:n].numpy()
    for path, image in zip(paths, images, strict=True):
        Image.fromarray(image.transpose(1, 2, 0)).save(path)
    return paths


def trained_smallest_subnet(tmp_path_factory: pytest.TempPathFactory, epochs: int = 2):
    """The default space's smallest sub-network trained on mnist5k (about 90 % validation accuracy).

    Int8 files are judged where it matters, on real images through a network that has learnt something;
    an untrained network's logits are all near-ties, where any rounding difference flips the top-1.
    Returns (net in eval mode, resolution, VerificationSet of the validation split, calibration images).
    """
    import numpy as np
    import torch

    from exports.verify import VerificationSet
    from factory.data import load_dataset, to_model_input
    from supernets import Supernet, get_space

    space = get_space()
    arch = space.smallest()
    r = arch.resolution
    ds = load_dataset("mnist5k", image_size=28)
    torch.manual_seed(0)
    net = Supernet(space, num_classes=10).extract(arch)
    cache = tmp_path_factory.getbasetemp() / "trained_smallest.pt"
    if cache.is_file():
        net.load_state_dict(torch.load(cache))
    else:
        x, y = to_model_input(ds.train.images, r, ds.info.mean, ds.info.std), ds.train.labels
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        gen = torch.Generator().manual_seed(0)
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(64):
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        torch.save(net.state_dict(), cache)
    net.eval()
    inputs = to_model_input(ds.val.images, r, ds.info.mean, ds.info.std)
    with torch.no_grad():
        reference = net(inputs).numpy()
    vset = VerificationSet(inputs.numpy(), ds.val.labels.numpy(), reference)
    calibration = to_model_input(ds.calib.images[:64], r, ds.info.mean, ds.info.std).numpy().astype(np.float32)
    return net, r, vset, calibration
