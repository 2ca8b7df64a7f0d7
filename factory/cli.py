"""The `factory` command. Thin: each command parses options and calls one library function.

Heavy imports (torch, tensorflow, openvino) happen inside commands so `factory --help` is instant.
"""

from __future__ import annotations

import os
import sys

import click

from factory.commands.eval import eval_command
from factory.commands.export import export_command, verify_command
from factory.commands.predictor import predictor
from factory.commands.search import search
from factory.commands.ship import benchmark_command, demo_command, specialize_command
from factory.commands.space import space
from factory.commands.targets import targets
from factory.commands.train import train
from factory.errors import FactoryError


class FactoryGroup(click.Group):
    """The one place where exceptions become exit codes: a FactoryError (any command, any depth) is printed
    as `error: ...` and exits with its `exit_code` (factory.errors); click's usage errors exit 2. Here, not
    in `main`, so that in-process callers (click's CliRunner) get the same codes as the shell."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except FactoryError as exc:
            if os.environ.get("FACTORY_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=FactoryGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ofa-factory")
def cli() -> None:
    """Once-for-all model factory: train one elastic supernet, then specialize and export a
    verified package per device.

    \b
    Typical flow:
      factory train --data mnist5k --preset demo --out runs/demo
      factory eval --run runs/demo --arch max
      factory specialize --run runs/demo --out dist
    Exit codes: 0 ok, 1 failure, 2 usage error, 3 infeasible target, 4 verification gate refused.
    """


cli.add_command(space)
cli.add_command(targets)
cli.add_command(predictor)
cli.add_command(search)
cli.add_command(train)
cli.add_command(eval_command)
cli.add_command(export_command)
cli.add_command(verify_command)
cli.add_command(specialize_command)
cli.add_command(benchmark_command)
cli.add_command(demo_command)


def main() -> None:
    """Entry point: exit codes come from `FactoryGroup`; an interrupt exits 130 without a traceback."""
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
