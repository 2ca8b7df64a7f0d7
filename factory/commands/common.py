"""Options shared by several commands, defined once."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
run_option = click.option(
    "--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=str),
    help="Run folder written by `factory train` (e.g. runs/demo).",
)
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
    help="Where PyTorch runs: auto picks CUDA when present.",
)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
