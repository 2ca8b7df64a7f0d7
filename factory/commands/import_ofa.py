"""`factory import ofa`: bring a Once-for-All MobileNetV3 supernet trained elsewhere (MIT's model zoo or
your own `ofa` training) into an ordinary run folder."""

from __future__ import annotations

from pathlib import Path

import click

from factory.commands.common import json_option, print_json


@click.group("import")
def import_group() -> None:
    """Import a supernet trained with another tool into a run folder every command accepts."""


@import_group.command("ofa")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--width", type=click.Choice(["1.0", "1.2"]), required=True,
              help="OFA's width multiplier: ofa_mbv3_d234_e346_k357_w1.0 or ..._w1.2.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder to create (must not exist, or be empty).")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Class names, one per output: a text file (one per line) or JSON (a list, or "
                   "imagenet_class_index.json's index -> [wnid, name]). Default: the indices 0..N-1.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="An ImageFolder of your images, sub-folders named after labels (any subset of classes): "
                   "30% recalibrates BN and calibrates int8, 35% ranks sub-networks, 35% is a test split "
                   "that only reports accuracy. Needed by eval, "
                   "predictor, search and specialize.")
@click.option("--on-bad-image", type=click.Choice(["skip", "fail"]), default="fail", show_default=True,
              help="Unreadable files in --data: skip them or stop with an error.")
@json_option
def import_ofa_command(checkpoint: Path, width: str, out: Path, labels: Path | None, data: Path | None,
                       on_bad_image: str, as_json: bool) -> None:
    """Map an OFA MobileNetV3 supernet checkpoint (a state dict, or {"state_dict": ...} as OFA's model zoo
    publishes it) into an ofa_mbv3 run folder: space ofa_mbv3 at --width, resolutions 128-224 px in steps
    of 4, ImageNet mean/std, the checkpoint's classes. A checkpoint with missing, unexpected or mis-shaped
    tensors, or of another OFA family (ProxylessNAS, ResNet50), is refused (exit 2) and nothing is written.

    \b
    Example:
      factory import ofa ofa_mbv3_d234_e346_k357_w1.0 --width 1.0 --out runs/ofa \\
          --labels imagenet_class_index.json --data my_images/
      factory specialize --run runs/ofa --targets all
    """
    from factory.ofa_import import import_ofa

    result = import_ofa(checkpoint, float(width), out, labels=labels, data=data, on_bad_image=on_bad_image)
    if as_json:
        print_json({"run": str(result.run), "width": result.width, "num_classes": result.num_classes,
                    "tensors": result.tensors, "images": result.images})
        return
    click.echo(f"imported {result.tensors} tensors into {result.run} (ofa_mbv3, width {result.width:.1f}, "
               f"{result.num_classes} classes, {result.images} images of yours)")
    if not result.images:
        click.echo("note: no --data given; eval, predictor, search and specialize need your images")
    click.echo(f"next: factory specialize --run {result.run} --targets all")
