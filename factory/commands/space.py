"""`factory space ...`: inspect search spaces."""

from __future__ import annotations

import click

from factory.commands.common import json_option, print_json


@click.group()
def space() -> None:
    """Inspect the search spaces (choices, number of sub-networks, cost range)."""


@space.command("show")
@click.option("--space", "space_name", default="small", show_default=True,
              help="Space name: 'small' (28-32 px inputs) or 'ofa_mbv3' (ImageNet-size, 128-224 px).")
@click.option("--phi", type=float, default=0.0, show_default=True,
              help="EfficientNet compound-scaling exponent: depth x1.2^phi, width x1.1^phi, resolution x1.15^phi.")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="OFA's width multiplier on every channel count (its published supernets: 1.0 and 1.2).")
@click.option("--sampling", type=click.Choice(["independent", "compound"]), default="independent",
              show_default=True, help="compound = CompOFA coupling of depth and expand ratio per stage.")
@click.option("--classes", "num_classes", type=int, default=10, show_default=True,
              help="Classifier width used for the cost figures.")
@json_option
def show(space_name: str, phi: float, width: float, sampling: str, num_classes: int, as_json: bool) -> None:
    """Stages, choices, number of sub-networks, MACs/params of the smallest and largest."""
    from supernets import cost, get_space

    try:
        sp = get_space(space_name, phi=phi, sampling=sampling, width=width)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    info = sp.describe()
    for which, arch in (("smallest", sp.smallest()), ("largest", sp.largest())):
        info[which] = {"arch": arch.to_dict(), **cost(sp, arch, num_classes).to_dict()}
    if as_json:
        print_json(info)
        return
    click.echo(f"space {info['name']}  phi={phi:g}  width={width:g}  sampling={sampling}")
    click.echo(f"resolutions: {info['resolutions']}")
    click.echo(f"stem: {info['stem']['channels']} ch, stride {info['stem']['stride']}; "
               f"first block: {info['first_block_channels']} ch")
    click.echo(f"{'stage':>5} {'out':>5} {'stride':>6} {'SE':>3} {'act':>7}  kernels    expands    depths")
    for i, s in enumerate(info["stages"]):
        click.echo(f"{i:>5} {s['out_channels']:>5} {s['stride']:>6} {'y' if s['se'] else 'n':>3} "
                   f"{s['activation']:>7}  {s['kernel_choices']!s:<10} {s['expand_choices']!s:<10} "
                   f"{s['depth_choices']}")
    click.echo(f"head: {info['head']['final_expand_channels']} -> {info['head']['feature_mix_channels']}")
    click.echo(f"sub-networks: {info['num_subnetworks']:.3e}")
    for which in ("smallest", "largest"):
        c = info[which]
        click.echo(f"{which:>8}: {c['macs'] / 1e6:8.2f} M MACs  {c['params'] / 1e6:6.3f} M params  "
                   f"peak activations {c['peak_activation_bytes'] / 1024:.0f} KiB")
