"""Pipeline step: a trained run + one sub-network -> a verified deployment package.

Builds what `exports.package.write_package` needs from the run: the BN-recalibrated static
sub-network and int8 calibration images (`factory.prepared`), the validation split with PyTorch
reference logits (the gate and the accuracy figures), the labels and preprocessing, cost, and lineage.
Two ways in, one way out (`_write`): `export_package` for a user-given arch (`factory export`) prepares
and converts here; `package_pick` for the search's verified pick (`factory specialize`) takes the
pick's calibrated network, converted file and latency measurement, so nothing is done twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factory.errors import UserInputError, VerificationError

if TYPE_CHECKING:
    from exports.package import WrittenPackage
    from exports.verify import VerificationSet
    from factory.data import Split
    from factory.prepared import PreparedSubnet
    from factory.run import Run
    from factory.search.pick import VerifiedPick
    from supernets import ArchConfig
    from targets.profile import TargetProfile

Say = Callable[[str], None]


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
    from factory.search.files import arch_from_option
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
    progress: Say | None = None,
    latency_repeats: int = 200,
    sign_key: Path | None = None,
) -> WrittenPackage:
    """Export one sub-network of `run` as a verified package at `out_dir` (`factory export`): one BN
    recalibration, one conversion per format, the gate.

    UserInputError for bad input (missing run, arch not in the space, unknown format/precision);
    VerificationError (exit 4) when the gate refuses a file — nothing is published then.
    """
    from factory.prepared import prepare_subnet
    from factory.run import load_run

    profile = _resolve_target(target)
    choice = resolve_choice(formats, precision, threads, profile)
    run = run if not isinstance(run, str | Path) else load_run(run)
    arch_cfg = _resolve_arch(run, arch)
    say = progress or (lambda _m: None)
    say(f"sub-network: resolution {arch_cfg.resolution}, depths {list(arch_cfg.depths)}; recalibrating BN")
    prepared = prepare_subnet(run, arch_cfg, choice.precision)
    return _write(run, prepared, choice, profile, Path(out_dir), lineage_extra, say, latency_repeats,
                  sign_key=sign_key)


def package_pick(run: Run, pick: VerifiedPick, profile: TargetProfile, out_dir: Path,
                 lineage_extra: dict[str, Any] | None = None, progress: Say | None = None,
                 latency_repeats: int = 200, sign_key: Path | None = None) -> WrittenPackage:
    """The search's verified pick as a package for `profile` (`factory specialize`): the pick's calibrated
    network, its converted file (copied, not converted again) and that file's latency measurement go in;
    the gate still checks checksums, parity and accuracy of the written file, and the budgets. The
    manifest records the pick's predicted figures next to the measured ones."""
    say = progress or (lambda _m: None)
    choice = resolve_choice(None, None, None, profile)
    return _write(run, pick.check.prepared, choice, profile, Path(out_dir), lineage_extra, say, latency_repeats,
                  pick=pick, sign_key=sign_key)


def _write(run: Run, prepared: PreparedSubnet, choice: ExportChoice, profile: TargetProfile | None, out_dir: Path,
           lineage_extra: dict[str, Any] | None, say: Say, latency_repeats: int,
           pick: VerifiedPick | None = None, sign_key: Path | None = None) -> WrittenPackage:
    """The one way a package is written from a run (`exports.package.write_package`), domain errors mapped."""
    from exports.package import PackageRequest, write_package
    from exports.verify import VerificationFailed

    arch = prepared.arch
    request = PackageRequest(
        model=prepared.model, formats=choice.formats, precision=choice.precision,
        preprocessing=prepared.preprocessing, labels=list(prepared.labels), validation=validation_set(run, prepared),
        test=_test_set(run, prepared),
        calibration=prepared.calibration, arch=arch.to_dict(), cost=_cost(run, arch),
        lineage=_lineage(run, profile, lineage_extra), target=profile.to_dict() if profile else None,
        budgets=_budgets(profile), threads=choice.threads, latency_repeats=latency_repeats, name=out_dir.name,
        converted=pick.files if pick else {}, timings=pick.timings if pick else {},
        predicted=pick.predicted.to_dict() if pick else None, sign_key=sign_key,
    )
    try:
        return write_package(request, out_dir, progress=say)
    except VerificationFailed as exc:
        raise VerificationError(f"{out_dir}: not published: {exc}") from None
    except ValueError as exc:
        raise UserInputError(str(exc)) from None


def _budgets(profile: TargetProfile | None) -> dict[str, float]:
    return profile.constraints.gate_budgets(profile.measurable_here) if profile else {}


def _resolve_target(target: TargetProfile | str | None) -> TargetProfile | None:
    if target is None or not isinstance(target, str):
        return target
    from targets.profile import ProfileError, get_profile

    try:
        return get_profile(target)
    except ProfileError as exc:
        raise UserInputError(str(exc)) from None


def validation_set(run: Run, prepared: PreparedSubnet) -> VerificationSet:
    """The whole validation split, preprocessed for the sub-network, with its PyTorch reference logits."""
    ds = run.dataset()
    if len(ds.val) == 0:
        raise UserInputError(f"run {run.path}: the validation split of {run.data.source!r} is empty")
    return _reference_set(ds.val, run, prepared)


def _test_set(run: Run, prepared: PreparedSubnet) -> VerificationSet | None:
    """The test split the same way (None for runs made before it existed: nothing reports test accuracy)."""
    ds = run.dataset()
    return _reference_set(ds.test, run, prepared) if len(ds.test) else None


def _reference_set(split: Split, run: Run, prepared: PreparedSubnet) -> VerificationSet:
    import torch

    from exports.verify import VerificationSet
    from factory.data import to_model_input

    inputs = to_model_input(split.images, prepared.arch.resolution, run.mean, run.std)
    with torch.no_grad():
        reference = torch.cat([prepared.model(chunk) for chunk in inputs.split(256)])
    return VerificationSet(inputs.numpy(), split.labels.numpy(), reference.numpy(), images=split.images.numpy())


def _cost(run: Run, arch: ArchConfig) -> dict[str, Any]:
    from supernets import cost

    return cost(run.space, arch, run.num_classes).to_dict()


def _lineage(run: Run, profile: TargetProfile | None, extra: dict[str, Any] | None) -> dict[str, Any]:
    from supernets.space import space_record

    return {
        "run": run.name,
        "run_path": str(run.path),
        "checkpoint_sha256": run.checkpoint_sha256,
        "space": space_record(run.space),  # factory verify rebuilds the space to re-derive MACs / params
        "data_source": run.data.source,
        "split_seed": run.data.split_seed,
        "val_fraction": run.data.val_fraction,
        "test_fraction": run.data.test_fraction,
        "target_profile": profile.name if profile else None,
        "search_seed": None,
        **(extra or {}),
    }
