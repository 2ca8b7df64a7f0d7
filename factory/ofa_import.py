"""`factory import ofa`: an OFA MobileNetV3 supernet checkpoint -> an ordinary run folder.

The run folder is what `factory train` writes (supernet.pt, data.json) plus import.json (where the
weights came from), so every later command takes it unchanged. It is built in a hidden sibling folder
and renamed into place at the end: a refused checkpoint or a crash leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from exports.files import atomic_write_text, ordinary_permissions, sha256_file
from factory.errors import UserInputError
from factory.run import DATA_FILE, SUPERNET_FILE, load_torch_file, save_supernet

IMPORT_FILE = "import.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what OFA's ImageNet supernets were trained with
IMAGENET_STD = (0.229, 0.224, 0.225)
# Of the user's folder: val ranks sub-networks, calib recalibrates BN / int8, test is only reported.
IMPORT_VAL_FRACTION = 0.35
IMPORT_CALIB_FRACTION = 0.3
IMPORT_TEST_FRACTION = 0.35


@dataclass(frozen=True)
class ImportResult:
    run: Path
    width: float
    num_classes: int
    tensors: int
    images: int  # images of --data (0 without)


def read_labels(path: Path, num_classes: int) -> list[str]:
    """Class names, one per output: a text file (one per line), a JSON list, or a JSON object index ->
    name or index -> [wnid, name] (Keras' imagenet_class_index.json; the wnid names the ImageFolder)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserInputError(f"--labels {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"--labels {path}: cannot read it ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"--labels {path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            try:
                data = [data[str(i)] for i in range(len(data))]
            except KeyError as exc:
                raise UserInputError(f"--labels {path}: keys must be the indices 0..{len(data) - 1}; "
                                     f"missing {exc}") from None
            data = [v[0] if isinstance(v, list) and v else v for v in data]
        if not isinstance(data, list) or not all(isinstance(v, str) and v for v in data):
            raise UserInputError(f"--labels {path}: expected a list of names, or an object index -> name")
        names = data
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise UserInputError(f"--labels {path}: {len(names)} names, but the checkpoint's classifier has "
                             f"{num_classes} outputs")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise UserInputError(f"--labels {path}: names must be unique; repeated: {dup}")
    return names


def import_ofa(checkpoint: Path, width: float, out: Path, *, labels: Path | None = None,
               data: Path | None = None, on_bad_image: str = "fail", seed: int = 0) -> ImportResult:
    """Map `checkpoint` into our `ofa_mbv3` supernet at `width` and write the run folder `out`.
    UserInputError (nothing written) for a checkpoint of another family, width or layout."""
    from supernets import Supernet, get_space
    from supernets.ofa_checkpoint import CheckpointMismatch, map_state_dict, ofa_width_of, unwrap_state_dict

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserInputError(f"--out {out}: already exists; choose a new run folder (nothing was written)")
    blob = load_torch_file(Path(checkpoint), what="checkpoint")
    try:
        state = unwrap_state_dict(blob)
        space = get_space("ofa_mbv3", width=width)
        classifier = state.get("classifier.linear.weight")
        num_classes = int(classifier.shape[0]) if classifier is not None and classifier.ndim == 2 else 1000
        net = Supernet(space, num_classes)
        found = ofa_width_of(state)
        if found is not None and found != width:
            raise CheckpointMismatch(f"its stem has the channels of width {found:.1f}, not {width:.1f}; "
                                     f"pass --width {found:.1f}")
        mapped = map_state_dict(state, space, net.state_dict())
    except CheckpointMismatch as exc:
        raise UserInputError(f"{checkpoint}: {exc} (nothing was written)") from None
    net.load_state_dict(mapped)
    net.eval()
    names = read_labels(Path(labels), num_classes) if labels is not None else [str(i) for i in range(num_classes)]
    dataset = None
    if data is not None:
        from factory.data import load_dataset

        dataset = load_dataset(str(data), image_size=max(space.resolutions), seed=seed,
                               on_bad_image=on_bad_image,  # type: ignore[arg-type]
                               val_fraction=IMPORT_VAL_FRACTION, calib_fraction=IMPORT_CALIB_FRACTION,
                               test_fraction=IMPORT_TEST_FRACTION, model=(names, IMAGENET_MEAN, IMAGENET_STD))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.importing-", dir=out.parent))
    try:
        save_supernet(net, space, staging / SUPERNET_FILE)
        data_record = dataset.describe() if dataset is not None else {
            "source": "", "class_names": names, "num_classes": num_classes, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "image_size": max(space.resolutions), "split_seed": seed,
            "val_fraction": IMPORT_VAL_FRACTION, "calib_fraction": IMPORT_CALIB_FRACTION,
            "test_fraction": IMPORT_TEST_FRACTION, "model_labels": True}
        atomic_write_text(staging / DATA_FILE, json.dumps(data_record, indent=2) + "\n")
        record = {"family": "ofa_mbv3", "checkpoint": str(Path(checkpoint).resolve()),
                  "checkpoint_sha256": sha256_file(Path(checkpoint)), "width": width, "tensors": len(mapped),
                  "num_classes": num_classes, "labels": str(labels) if labels else None,
                  "data": str(data) if data else None}
        atomic_write_text(staging / IMPORT_FILE, json.dumps(record, indent=2) + "\n")
        ordinary_permissions(staging)
        if out.exists():
            out.rmdir()  # an empty folder the user made for it
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    images = 0 if dataset is None else len(dataset.val) + len(dataset.calib) + len(dataset.test)
    return ImportResult(out, width, num_classes, len(mapped), images)
