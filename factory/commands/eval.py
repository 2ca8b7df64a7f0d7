"""`factory eval`: BN-recalibrated accuracy of one sub-network of a trained run, with its 95% interval."""

from __future__ import annotations

import click

from factory.commands.common import device_option, json_option, print_json, run_option


@click.command("eval")
@run_option
@click.option("--arch", "arch_spec", default="max", show_default=True,
              help="max (largest sub-network), min (smallest), or a JSON file: an arch (ours, or MIT Once-for-All's "
                   "with keys ks, e, d, r), a pick.json or a pareto.json of `factory search`.")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="val: the split the predictor and the pick rank sub-networks on; test: held out from "
                   "everything (quote this one for a sub-network you chose by looking at val).")
@device_option
@json_option
def eval_command(run_dir: str, arch_spec: str, split: str, device: str, as_json: bool) -> None:
    """Recompute BN statistics on the calibration split, then report accuracy (with its 95% Wilson interval)
    and loss on the validation or test split."""
    from exports.intervals import wilson_interval
    from factory.evaluate import evaluate_arch
    from factory.run import load_run
    from factory.search.files import arch_from_option

    run = load_run(run_dir)
    arch = arch_from_option(run.space, arch_spec)
    result = evaluate_arch(run, arch, device=device, split=split)
    low, high = wilson_interval(round(result.accuracy * result.images), result.images)
    if as_json:
        print_json({**result.to_dict(), "split": split, "ci95": [low, high], "run": str(run.path),
                    "checkpoint_sha256": run.checkpoint_sha256})
        return
    name = {"val": "validation", "test": "test"}[split]
    click.echo(f"{run.path} arch={arch_spec}: accuracy {result.accuracy * 100:.2f}% "
               f"[{low * 100:.1f}, {high * 100:.1f}] (95% CI)  loss {result.loss:.4f}  "
               f"({result.images} {name} images, resolution {arch.resolution})")
