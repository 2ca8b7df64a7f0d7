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

    from factory.export import export_package

    out = tmp_path_factory.getbasetemp() / "export_packages" / name
    if (out / "manifest.json").is_file():
        return out
    torch.set_num_threads(1)
    return export_package(run_dir, arch, formats, precision, out, latency_repeats=LATENCY_REPEATS)


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
