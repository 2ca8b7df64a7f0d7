"""`factory eval`: BN-recalibrated validation accuracy of one sub-network of a trained run."""

from __future__ import annotations

import click

from factory.commands.common import device_option, json_option, print_json, run_option


@click.command("eval")
@run_option
@click.option("--arch", "arch_spec", default="max", show_default=True,
              help="max (largest sub-network), min (smallest), or a JSON file: an arch (ours, or MIT Once-for-All's "
                   "with keys ks, e, d, r), a pick.json or a pareto.json of `factory search`.")
@device_option
@json_option
def eval_command(run_dir: str, arch_spec: str, device: str, as_json: bool) -> None:
    """Recompute BN statistics on the calibration split, then report accuracy and loss on validation."""
    from factory.evaluate import evaluate_arch
    from factory.run import load_run
    from factory.search.files import arch_from_option

    run = load_run(run_dir)
    arch = arch_from_option(run.space, arch_spec)
    result = evaluate_arch(run, arch, device=device)
    if as_json:
        print_json({**result.to_dict(), "run": str(run.path), "checkpoint_sha256": run.checkpoint_sha256})
        return
    click.echo(f"{run.path} arch={arch_spec}: accuracy {result.accuracy * 100:.2f}%  loss {result.loss:.4f}  "
               f"({result.images} validation images, resolution {arch.resolution})")
