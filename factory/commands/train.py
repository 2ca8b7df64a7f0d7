"""`factory train`: progressive-shrinking training of a supernet into a run folder."""

from __future__ import annotations

from pathlib import Path

import click

from factory.commands.common import print_json, track_option


def _resolve_config(config_file: str | None, preset: str | None, resume: bool, out: Path):
    """Base config: --config FILE, else --preset, else (with --resume) the run's stored config, else demo."""
    from factory.run import CONFIG_FILE
    from factory.training.config import load_config_file, load_preset

    if config_file and preset:
        raise click.UsageError("give either --config or --preset, not both")
    if config_file:
        return load_config_file(config_file)
    if preset:
        return load_preset(preset)
    if resume and (out / CONFIG_FILE).is_file():
        return load_config_file(out / CONFIG_FILE)
    return load_preset("demo")


@click.command("train")
@click.option("--data", "data", default=None,
              help="mnist5k (embedded default), an ImageFolder PATH, or cifar10:PATH. Default: the config's.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder to create (or continue with --resume).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML training config (see factory/presets/*.toml for the keys).")
@click.option("--preset", type=click.Choice(["demo", "full"]), default=None,
              help="demo = minutes on 2 CPU cores for mnist5k; full = OFA-like schedule. Default: demo.")
@click.option("--epochs-per-phase", type=click.IntRange(min=0), default=None, help="Override every phase's epochs.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
              help="Override optimizer steps per epoch (default: one pass over the train split).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global batch size (all processes).")
@click.option("--seed", type=int, default=None, help="Seed for init, batch order, augmentation and sampling.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Where PyTorch trains (default: the config's, auto = CUDA when present).")
@click.option("--sampler", type=click.Choice(["uniform", "sandwich"]), default=None,
              help="uniform = N random sub-networks per step; sandwich = largest + smallest + random "
                   "(BigNAS; train.smallest_every = k trains the smallest every k-th step, a random one between).")
@click.option("--on-bad-image", type=click.Choice(["skip", "fail"]), default=None,
              help="Unreadable ImageFolder files: skip them (named on stderr) or stop with an error.")
@click.option("--checkpoint-interval", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds between mid-epoch checkpoints (epoch ends always checkpoint).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@track_option
def train(data, out, config_file, preset, epochs_per_phase, steps_per_epoch, batch_size, seed, device, sampler,
          on_bad_image, checkpoint_interval, resume, quiet, as_json, track) -> None:
    """Train one elastic supernet with progressive shrinking (teacher -> kernel -> depth -> expand).

    \b
    Examples:
      factory train --data mnist5k --preset demo --out runs/demo
      factory train --out runs/demo --resume
      torchrun --nproc_per_node 2 -m factory train --data mnist5k --out runs/ddp
    """
    from dataclasses import replace

    from factory.training.config import Overrides, apply_overrides
    from factory.training.trainer import train as run_training

    cfg = _resolve_config(config_file, preset, resume, out)
    cfg = apply_overrides(cfg, Overrides(
        data=data, epochs_per_phase=epochs_per_phase, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
        seed=seed, device=device, sampler=sampler, on_bad_image=on_bad_image,
        checkpoint_interval_s=checkpoint_interval,
    ))
    if quiet:
        cfg = replace(cfg, runtime=replace(cfg.runtime, progress=False))
    import os

    from factory.tracking import NullTracker, tracked

    main_rank = os.environ.get("RANK", "0") == "0"
    with tracked(track if main_rank else None, out, "train") as tracker:
        tracker.log_params(cfg.to_dict())

        def on_epoch(metrics: dict) -> None:
            tracker.log_metrics({k: v for k, v in metrics.items() if k not in ("epoch", "epochs", "step")},
                                step=metrics.get("global_epoch"))

        summary = run_training(cfg, out, resume=resume,
                               on_epoch=None if isinstance(tracker, NullTracker) else on_epoch)
        tracker.log_metrics({k: summary[k] for k in ("acc_max", "acc_min", "train_seconds", "elapsed_seconds")
                             if summary.get(k) is not None})
        for name in ("config.toml", "data.json", "metrics.jsonl", "summary.json"):
            tracker.log_artifact(out / name)
    if not main_rank:
        return
    if as_json:
        print_json(summary)
        return
    click.echo(f"trained {summary['run']}: {summary['epochs']} epochs, {summary['steps']} steps, "
               f"{summary['elapsed_seconds']:.0f} s ({summary['train_seconds']:.0f} s in training steps), "
               f"{summary['world_size']} process(es) on {summary['device']}")
    if summary.get("acc_max") is not None:
        smallest = "" if summary.get("acc_min") is None else f", smallest {summary['acc_min'] * 100:.2f}%"
        click.echo(f"validation accuracy (BN recalibrated): largest {summary['acc_max'] * 100:.2f}%{smallest}")
    click.echo(f"next: factory eval --run {out} --arch max")
