"""`factory import ofa`: what a user gets for a good checkpoint, and the refusals for bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from factory.cli import cli

pytest.importorskip("ofa")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random-init OFAMobileNetV3 w1.0 state dict, as the model zoo wraps it."""
    from ofa_reference import reference_supernet, save_checkpoint

    return save_checkpoint(reference_supernet(1.0), tmp_path_factory.mktemp("ckpt") / "ofa_w10.pth")


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _import(ckpt: Path, out: Path, *extra: str):
    return CliRunner().invoke(cli, ["import", "ofa", str(ckpt), "--width", "1.0", "--out", str(out), *extra])


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no staging folder


def _image_folder(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (40, 30), (i * 20 % 255, 80, 160)).save(root / name / f"{i}.png")
    return root


def test_import_writes_a_run_every_command_accepts(checkpoint, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"n{i:08d}" for i in range(1000)) + "\n")
    data = _image_folder(tmp_path / "images", {"n00000007": 4, "n00000042": 4})
    out = tmp_path / "run"
    result = _import(checkpoint, out, "--labels", str(labels), "--data", str(data))
    assert result.exit_code == 0, result.output
    info = json.loads((out / "data.json").read_text())
    assert info["num_classes"] == 1000 and info["class_names"][42] == "n00000042"
    assert info["mean"] == [0.485, 0.456, 0.406] and info["model_labels"] is True
    sizes = info["sizes"]
    assert sizes["val"] + sizes["calib"] + sizes["test"] == 8 and sizes["train"] == 0 and sizes["test"] == 2
    record = json.loads((out / "import.json").read_text())
    assert record["width"] == 1.0 and record["tensors"] == len(_state(checkpoint))
    space = json.loads(CliRunner().invoke(cli, ["space", "show", "--space", "ofa_mbv3", "--json"]).output)
    assert space["resolutions"] == list(range(128, 225, 4))

    from factory.run import load_run

    run = load_run(out)
    ds = run.dataset()
    assert set(ds.val.labels.tolist()) == {7, 42}  # folder names looked up in the model's labels
    evaluated = CliRunner().invoke(cli, ["eval", "--run", str(out), "--arch", "min", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["arch"]["resolution"] == 128


@pytest.mark.parametrize("damage, named", [
    ("remove", "blocks.7.conv.depth_conv.conv.7to5_matrix"),
    ("reshape", "blocks.3.conv.point_linear.conv.conv.weight"),
    ("extra", "blocks.21.conv.point_linear.conv.conv.weight"),
])
def test_malformed_checkpoint_is_refused_naming_the_tensor(checkpoint, tmp_path, damage, named):
    state = _state(checkpoint)
    if damage == "remove":
        del state[named]
    elif damage == "reshape":
        state[named] = state[named][:, :-8]
    else:
        state[named] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)  # a plain state dict this time
    out = tmp_path / "run"
    result = _import(bad, out)
    assert result.exit_code == 2, result.output
    assert named in result.output and "Traceback" not in result.output
    _nothing_written(out)


@pytest.mark.parametrize("family, word", [("OFAResNets", "ResNet50"), ("OFAProxylessNASNets", "ProxylessNAS")])
def test_other_ofa_families_are_named_as_unsupported(tmp_path, family, word):
    import ofa.imagenet_classification.elastic_nn.networks as networks

    torch.save({"state_dict": getattr(networks, family)(n_classes=10).state_dict()}, tmp_path / "other.pth")
    out = tmp_path / "run"
    result = _import(tmp_path / "other.pth", out)
    assert result.exit_code == 2, result.output
    assert word in result.output and "MobileNetV3" in result.output
    _nothing_written(out)


def test_wrong_width_labels_and_folders_are_refused(checkpoint, tmp_path):
    out = tmp_path / "run"
    wrong_width = CliRunner().invoke(cli, ["import", "ofa", str(checkpoint), "--width", "1.2", "--out", str(out)])
    assert wrong_width.exit_code == 2 and "--width 1.0" in wrong_width.output
    short = tmp_path / "labels.txt"
    short.write_text("cat\ndog\n")
    few = _import(checkpoint, out, "--labels", str(short))
    assert few.exit_code == 2 and "2 names" in few.output and "1000 outputs" in few.output
    stray = _image_folder(tmp_path / "images", {"7": 3, "kitten": 3})
    unknown = _import(checkpoint, out, "--data", str(stray))
    assert unknown.exit_code == 2 and "kitten" in unknown.output
    _nothing_written(out)
    existing = tmp_path / "taken"
    (existing / "x").mkdir(parents=True)
    assert _import(checkpoint, existing).exit_code == 2
