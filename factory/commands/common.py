"""Options shared by several commands, defined once."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
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


def search_options(f: F) -> F:
    """--population, --generations, --seed: the NSGA-II settings every searching command takes."""
    return population_option(generations_option(seed_option(f)))


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
