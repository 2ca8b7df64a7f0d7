"""`factory export` (run + arch -> verified package) and `factory verify PACKAGE` (the gate alone)."""

from __future__ import annotations

from pathlib import Path

import click

from exports import FORMATS, PRECISIONS
from factory.commands.common import json_option, print_json, run_option, sign_key_option

# From the one table of formats; `exports` is import-cheap (stdlib only), so `factory --help` stays fast.
FORMAT_NAMES: tuple[str, ...] = tuple(FORMATS)
PRECISION_NAMES: tuple[str, ...] = PRECISIONS


def _parse_formats(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise click.BadParameter(f"no format given; allowed: {', '.join(FORMAT_NAMES)} (comma-separated)")
    bad = [n for n in names if n not in FORMAT_NAMES]
    if bad:
        raise click.BadParameter(f"unknown format {bad[0]!r}; allowed: {', '.join(FORMAT_NAMES)} (comma-separated)")
    return tuple(dict.fromkeys(names))


@click.command("export")
@run_option
@click.option("--arch", "arch_spec", default="max", show_default=True,
              help="max (largest sub-network), min (smallest), or a JSON file: an arch (ours, or MIT Once-for-All's "
                   "with keys ks, e, d, r), the pick.json of `factory search`, or a pareto.json (its "
                   "chosen pick).")
@click.option("--formats", callback=_parse_formats, default=None,
              help=f"Comma-separated: {','.join(FORMAT_NAMES)}. Default: the target's format.")
@click.option("--precision", type=click.Choice(PRECISION_NAMES), default=None,
              help="fp32 | fp16 | int8 (int8 is calibrated on the run's calib split). Default: the target's, "
                   "else fp32.")
@click.option("--target", default=None,
              help="Target profile name or .toml: takes format, precision, threads and budgets from it.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the latency measurement. Default: the target's, else 1.")
@click.option("--repeats", type=click.IntRange(min=1), default=200, show_default=True,
              help="Timed runs per file for p50/p95.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Package folder to write (replaced atomically if it holds a package).")
@sign_key_option
@json_option
def export_command(run_dir: str, arch_spec: str, formats: tuple[str, ...] | None, precision: str | None,
                   target: str | None, threads: int | None, repeats: int, out_dir: str, as_json: bool,
                   sign_key: Path | None) -> None:
    """Export one sub-network of a trained run as a verified package (manifest, labels, model card).

    Every file is checked against the PyTorch sub-network before the package is published; a refused
    gate exits with code 4 and leaves nothing at --out.
    """
    from pathlib import Path

    from factory.ship.export import export_package

    echo = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    package = export_package(run_dir, arch_spec, formats, precision, Path(out_dir), target=target, threads=threads,
                             progress=echo, latency_repeats=repeats, sign_key=sign_key)
    if as_json:
        print_json({"package": str(package.path), "files": package.manifest["files"],
                    "metrics": package.manifest["metrics"]})
        return
    click.echo(f"package written: {package.path}")


@click.command("verify")
@click.argument("package", type=click.Path(file_okay=False, path_type=str))
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the latency measurement. Default: as recorded in the manifest.")
@click.option("--repeats", type=click.IntRange(min=0), default=200, show_default=True,
              help="Timed runs per file (0 skips latency).")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Also require the package's model-signing signature (model.sig) to verify with this "
                   "elliptic-curve public key (PEM) over its present content.")
@json_option
def verify_command(package: str, threads: int | None, repeats: int, as_json: bool, public_key: Path | None) -> None:
    """Check a package: its signature (with --public-key), checksums, each file loads and runs, parity with
    the PyTorch reference, budgets.

    Exit 4 naming the file and the figure when a check fails.
    """
    from pathlib import Path

    from exports.verify import VerificationFailed, verify_package
    from factory.errors import UserInputError, VerificationError

    try:
        report = verify_package(Path(package), threads=threads, latency_repeats=repeats, public_key=public_key)
    except VerificationFailed as exc:
        if as_json:
            print_json(exc.report)
        raise VerificationError(str(exc)) from None
    except ValueError as exc:
        raise UserInputError(str(exc)) from None
    if as_json:
        print_json(report)
        return
    for f in report["files"]:
        lat = f"  p50 {f['latency_p50_ms']:.3f} ms  p95 {f['latency_p95_ms']:.3f} ms" if "latency_p50_ms" in f else ""
        click.echo(f"ok  {f['path']:<22} {f['precision']}  accuracy {f['accuracy']:.2%}  "
                   f"max|diff| {f['relative_diff']:.1e} x scale  agreement {f['top1_agreement']:.1%}{lat}")
    click.echo(f"verified {len(report['files'])} file(s) on {report['images']} images: passed")
    for note in report["manifest_checks"]["skipped"]:
        click.echo(f"manifest claim not re-derived: {note}")
