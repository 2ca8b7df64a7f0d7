"""Options shared by several commands, defined once."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
run_option = click.option(
    "--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=str),
    help="Run folder written by `factory train` (e.g. runs/demo).",
)
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where PyTorch runs: auto picks CUDA when present.",
)
population_option = click.option("--population", type=click.IntRange(min=4), default=100, show_default=True,
                                 help="NSGA-II population (per target).")
generations_option = click.option("--generations", type=click.IntRange(min=0), default=100, show_default=True,
                                  help="NSGA-II generations (per target).")
seed_option = click.option("--seed", type=int, default=0, show_default=True,
                           help="Search seed: same seed, same inputs -> same pick.")
verify_top_option = click.option(
    "--verify-top", type=click.IntRange(min=0), default=3, show_default=True,
    help="Candidates checked for real (BN-recalibrated accuracy, latency of the exported file) before the pick; "
         "0 trusts the predictions (fast, not for shipping).",
)


track_option = click.option(
    "--track", "track", is_flag=False, flag_value="local", default=None, metavar="[URI]",
    help="Track this command in MLflow: alone, a local SQLite store in RUN/mlflow.db (browse it with "
         "`mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db`); with a URI (sqlite:///..., "
         "http://host:5000), that store or tracking server. Needs the 'track' extra (pip install "
         "'ofa-factory[track]').",
)


def _check_sign_key(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    """Refuse an unusable key before any work: model-signing installed, an EC private key in PEM."""
    if value is None:
        return None
    try:
        import model_signing  # noqa: F401
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError:
        raise click.BadParameter("signing needs OpenSSF's model-signing, an optional extra: "
                                 "pip install 'ofa-factory[sign]'") from None
    try:
        key = load_pem_private_key(value.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(f"{value}: not an unencrypted private key in PEM ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise click.BadParameter(f"{value}: a {type(key).__name__}; model-signing keys are elliptic-curve "
                                 "(openssl ecparam -name prime256v1 -genkey -noout -out key.pem)")
    return value


sign_key_option = click.option(
    "--sign-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    callback=_check_sign_key,
    help="Sign every package with this elliptic-curve private key (PEM) using OpenSSF model-signing "
         "(PACKAGE/model.sig); apps check it with `factory verify PACKAGE --public-key KEY.pub`.",
)


def search_options(f: F) -> F:
    """--population, --generations, --seed: the NSGA-II settings every searching command takes."""
    return population_option(generations_option(seed_option(f)))


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
