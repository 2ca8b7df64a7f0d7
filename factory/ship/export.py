"""Pipeline step: a trained run + one sub-network -> a verified deployment package.

Builds what `exports.package.write_package` needs from the run: the BN-recalibrated static
sub-network, calibration images (int8), the validation split with PyTorch reference logits (the gate
and the accuracy figures), the labels and preprocessing, cost, and lineage. The specialize step calls
`export_package` once per target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.errors import UserInputError, VerificationError

if TYPE_CHECKING:
    from factory.run import Run
    from supernets import ArchConfig
    from targets.profile import TargetProfile

CALIBRATION_IMAGES = 200  # int8 calibration: enough for stable min/max, seconds to run


@dataclass(frozen=True)
class ExportChoice:
    """Formats / precision / threads after merging the command line with a target profile."""

    formats: tuple[str, ...]
    precision: str
    threads: int


def resolve_choice(formats: Sequence[str] | None, precision: str | None, threads: int | None,
                   target: TargetProfile | None) -> ExportChoice:
    """Explicit options win only when they agree with the target: a conflict is an error, never a guess."""
    from exports import FORMATS, PRECISIONS

    for fmt in formats or ():
        if fmt not in FORMATS:
            raise UserInputError(f"--formats: unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if precision is not None and precision not in PRECISIONS:
        raise UserInputError(f"--precision: unknown {precision!r}; allowed: {', '.join(PRECISIONS)}")
    if target is None:
        if not formats:
            raise UserInputError(f"--formats: none given; allowed: {', '.join(FORMATS)} (comma-separated)")
        return ExportChoice(tuple(dict.fromkeys(formats)), precision or "fp32", threads or 1)
    if formats and target.format not in formats:
        raise UserInputError(f"--formats {','.join(formats)}: target {target.name!r} runs {target.format} "
                             f"({target.runtime}); include it or drop --formats")
    if precision is not None and precision != target.precision:
        raise UserInputError(f"--precision {precision}: target {target.name!r} asks for {target.precision}; "
                             "drop --precision or use another target")
    return ExportChoice(tuple(dict.fromkeys(formats or (target.format,))), target.precision,
                        threads or target.threads)


def _resolve_arch(run: Run, arch: ArchConfig | str) -> ArchConfig:
    from factory.training.trainer import arch_from_option
    from supernets import ArchConfig

    if isinstance(arch, ArchConfig):
        try:
            run.space.validate(arch)
        except ValueError as exc:
            raise UserInputError(f"arch: not in the run's space {run.space.name!r}: {exc}") from None
        return arch
    return arch_from_option(run.space, str(arch))


def export_package(
    run: Run | str | Path,
    arch: ArchConfig | str,
    formats: Sequence[str] | None,
    precision: str | None,
    out_dir: Path,
    target: TargetProfile | str | None = None,
    threads: int | None = None,
    lineage_extra: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    latency_repeats: int = 200,
) -> Path:
    """Export one sub-network of `run` as a verified package at `out_dir`; returns `out_dir`.

    UserInputError for bad input (missing run, arch not in the space, unknown format/precision);
    VerificationError (exit 4) when the gate refuses a file — nothing is published then.
    """
    from exports.package import PackageRequest, Preprocessing, write_package
    from exports.verify import VerificationFailed
    from factory.run import load_run

    profile = _resolve_target(target)
    choice = resolve_choice(formats, precision, threads, profile)
    run = run if not isinstance(run, str | Path) else load_run(run)
    arch_cfg = _resolve_arch(run, arch)
    say = progress or (lambda _m: None)
    say(f"sub-network: resolution {arch_cfg.resolution}, depths {list(arch_cfg.depths)}; recalibrating BN")
    model, calibration, validation = _prepare_model_and_data(run, arch_cfg, choice.precision)
    request = PackageRequest(
        model=model, formats=choice.formats, precision=choice.precision,
        preprocessing=Preprocessing(arch_cfg.resolution, tuple(run.mean), tuple(run.std)),  # type: ignore[arg-type]
        labels=list(run.class_names), validation=validation, calibration=calibration, arch=arch_cfg.to_dict(),
        cost=_cost(run, arch_cfg), lineage=_lineage(run, profile, lineage_extra),
        target=profile.to_dict() if profile else None, budgets=_budgets(profile), threads=choice.threads,
        latency_repeats=latency_repeats,
        name=Path(out_dir).name,
    )
    try:
        return write_package(request, Path(out_dir), progress=say)
    except VerificationFailed as exc:
        raise VerificationError(f"{out_dir}: not published: {exc}") from None
    except ValueError as exc:
        raise UserInputError(str(exc)) from None


def _budgets(profile: TargetProfile | None) -> dict[str, float]:
    """The target's constraints the gate can check here. Latency budgets only when the target's latency is
    measured on this machine (a remote device's budgets say nothing about this CPU); peak memory is a
    prediction, not a measurement of the file, so the search step owns it."""
    if profile is None:
        return {}
    budgets = profile.constraints.to_dict()
    budgets.pop("peak_memory_mb", None)
    if not profile.measurable_here:
        budgets.pop("latency_p50_ms", None)
        budgets.pop("latency_p95_ms", None)
    return budgets


def _resolve_target(target: TargetProfile | str | None) -> TargetProfile | None:
    if target is None or not isinstance(target, str):
        return target
    from targets.profile import ProfileError, get_profile

    try:
        return get_profile(target)
    except ProfileError as exc:
        raise UserInputError(str(exc)) from None


def _prepare_model_and_data(run: Run, arch: ArchConfig, precision: str) -> tuple[Any, Any, Any]:
    """The calibrated static sub-network, int8 calibration images, and the validation set + reference logits."""
    import torch

    from exports.verify import VerificationSet
    from factory.data import to_model_input
    from factory.evaluate import calibrated_subnet

    model = calibrated_subnet(run, arch)
    ds = run.dataset()
    calibration = None
    if precision == "int8":
        if len(ds.calib) == 0:
            raise UserInputError(f"int8 needs calibration data: the calib split of {run.data_source!r} is empty")
        calibration = to_model_input(ds.calib.images[:CALIBRATION_IMAGES], arch.resolution, run.mean,
                                     run.std).numpy()
    if len(ds.val) == 0:
        raise UserInputError(f"run {run.path}: the validation split of {run.data_source!r} is empty")
    inputs = to_model_input(ds.val.images, arch.resolution, run.mean, run.std)
    with torch.no_grad():
        reference = torch.cat([model(chunk) for chunk in inputs.split(256)])
    validation = VerificationSet(inputs.numpy(), ds.val.labels.numpy(), reference.numpy())
    return model, calibration, validation


def _cost(run: Run, arch: ArchConfig) -> dict[str, Any]:
    from supernets import cost

    return cost(run.space, arch, run.num_classes).to_dict()


def _lineage(run: Run, profile: TargetProfile | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "run": run.name,
        "run_path": str(run.path),
        "checkpoint_sha256": run.checkpoint_sha256,
        "space": {"name": run.space.name},
        "data_source": run.data_source,
        "split_seed": run.split_seed,
        "val_fraction": run.val_fraction,
        "target_profile": profile.name if profile else None,
        "search_seed": None,
        **(extra or {}),
    }
