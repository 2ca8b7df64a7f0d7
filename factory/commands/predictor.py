"""`factory predictor fit`: measure sampled sub-networks and fit the accuracy predictor of a run."""

from __future__ import annotations

import click

from factory.commands.common import device_option, json_option, print_json, run_option, track_option


@click.group()
def predictor() -> None:
    """The accuracy predictor a search uses instead of measuring every candidate."""


@predictor.command("fit")
@run_option
@click.option("--samples", type=click.IntRange(min=20), default=None,
              help="Random sub-networks to measure (stratified over resolution and size), held-out ones included. "
                   "Default: 400 (28-px space), 100 (224-px ofa_mbv3: ~3 s each on 2 CPU cores). "
                   "~0.3 s each for 1500 validation images on 2 CPU cores; measurements are cached in the run, a "
                   "rerun resumes. More samples, better ranking: on the demo supernet held-out Spearman went "
                   "0.79 -> 0.84 from 200 to 450 (bench/predictor_quality.py, validation split).")
@click.option("--holdout", type=click.IntRange(min=5), default=None,
              help="Samples kept out of the fit to report the rank correlation (Spearman). Default: a quarter "
                   "of --samples, 10 to 50.")
@click.option("--val-images", type=click.IntRange(min=50), default=None,
              help="Measure on a fixed subset of this many validation images (default: the whole split).")
@click.option("--calib-images", type=click.IntRange(min=1), default=None,
              help="Recalibrate BN on a fixed class-stratified subset of this many calibration images for each "
                   "measurement (default: the whole calib split). For large calib splits (e.g. an ImageFolder at "
                   "224 px); on the demo 150 of 300 saved only 6-23% and one subset ranked worse "
                   "(docs/decisions.md). The verified pick and the package always use the whole split.")
@click.option("--uniform/--no-uniform", default=True, show_default=True,
              help="Also measure every uniformly scaled sub-network (same depth/kernel/expand everywhere; 108 in "
                   "the built-in spaces). They join the fit, never the held-out set, and the search's verification "
                   "uses their measured accuracy, so a pick never loses to a measured hand-scaled network.")
@click.option("--screen/--no-screen", default=True, show_default=True,
              help="Measure the held-out and uniformly scaled sub-networks on every validation image, the other "
                   "training sub-networks only on the images one of those got wrong (the rest counted right): "
                   "~40% less measuring on the demo, held-out Spearman no lower (docs/decisions.md). One "
                   "process only; under torchrun every sub-network is measured on every image.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling and the fit.")
@device_option
@json_option
@track_option
def fit(run_dir: str, samples: int, holdout: int, val_images: int | None, calib_images: int | None, uniform: bool,
        screen: bool, seed: int, device: str, as_json: bool, track: str | None) -> None:
    """Sample, measure (BN recalibrated, validation split), fit boosted regression trees; write RUN/predictor.pt.

    \b
    Examples:
      factory predictor fit --run runs/demo --samples 200
      torchrun --nproc_per_node 4 -m factory -- predictor fit --run runs/big --device cuda
    (the "--" keeps torchrun from reading --run as its own --run-path)
    """
    import os
    from pathlib import Path

    from factory.predictor.fit import fit_predictor
    from factory.tracking import log_predictor_fit, tracked

    main_rank = os.environ.get("RANK", "0") == "0"
    with tracked(track if main_rank else None, Path(run_dir), "predictor fit") as tracker:
        tracker.log_params({"samples": samples, "holdout": holdout, "seed": seed, "val_images": val_images,
                            "calib_images": calib_images, "uniform": uniform, "screen": screen, "device": device})
        report = fit_predictor(run_dir, samples=samples, holdout=holdout, seed=seed, val_images=val_images,
                               progress=not as_json, uniform=uniform, device=device, screen=screen,
                               calib_images=calib_images)
        log_predictor_fit(tracker, report.to_dict())
    if not main_rank:
        return
    if as_json:
        print_json(report.to_dict())
        return
    lo, hi = report.accuracy_range
    click.echo(f"measured {report.samples} sub-networks ({report.uniform} of them uniformly scaled) "
               f"on {report.val_images} validation images, BN recalibrated on {report.calib_images} calibration images "
               f"(accuracy {100 * lo:.2f}..{100 * hi:.2f}%) in {report.measure_seconds:.0f} s")
    if report.screen is not None:
        click.echo(f"screened: {report.screened} training sub-networks measured on the {len(report.screen.hard)} "
                   f"images one of the {report.screen.exact} measured on every image got wrong (the other "
                   f"{report.screen.easy} counted right)")
    click.echo(f"fit on {report.train}, held out {report.holdout}: Spearman {report.holdout_spearman:.3f} "
               f"(MACs alone: {report.macs_spearman:.3f}), mean abs error {100 * report.holdout_mae:.2f} points")
    click.echo(f"wrote {report.path}")
