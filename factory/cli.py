"""The `factory` command. Thin: each command parses options and calls one library function.

Heavy imports (torch, tensorflow, openvino) happen inside commands so `factory --help` is instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import click

from exports.gc_policy import freeze_for_exit, freeze_import_survivors
from factory.commands.eval import eval_command
from factory.commands.export import export_command, verify_command
from factory.commands.import_ofa import import_group
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


class _LogTee:
    """A text stream that also appends what is written to a log file, minus carriage-return frames."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        if "\r" not in text:
            self._log.write(text)
            self._log.flush()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def _start_logging(ctx: click.Context, quiet: bool, log_file: Path | None) -> None:
    """--quiet / --log-file for this process and the processes it starts (FACTORY_QUIET / FACTORY_LOG_FILE,
    read by exports.progress); undone when the command ends (in-process callers share os.environ)."""
    from exports.progress import LOG_FILE_ENV, QUIET_ENV

    saved = {k: os.environ.get(k) for k in (QUIET_ENV, LOG_FILE_ENV)}
    if quiet:
        os.environ[QUIET_ENV] = "1"
    path = log_file or (Path(os.environ[LOG_FILE_ENV]) if os.environ.get(LOG_FILE_ENV) else None)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            log = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"{path}: cannot be written ({exc.strerror})", param_hint="--log-file") from None
        os.environ[LOG_FILE_ENV] = str(path.absolute())
        streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _LogTee(sys.stdout, log), _LogTee(sys.stderr, log)

        def stop_logging() -> None:
            sys.stdout, sys.stderr = streams
            log.close()

        ctx.call_on_close(stop_logging)

    def restore_env() -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    ctx.call_on_close(restore_env)


@click.group(cls=FactoryGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ofa-factory")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bars and no per-step lines: results, warnings and errors only.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also append all output to this file: one line per epoch / table / target, no progress-bar "
                   "frames (bars are off then; they are off whenever the output is not a terminal).")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, log_file: Path | None) -> None:
    """Once-for-all model factory: train one elastic supernet, then specialize and export a
    verified package per device.

    \b
    Typical flow:
      factory train --data mnist5k --preset demo --out runs/demo
      factory eval --run runs/demo --arch max
      factory specialize --run runs/demo --out dist
    Exit codes: 0 ok, 1 failure, 2 usage error, 3 infeasible target, 4 verification gate refused.
    """
    _start_logging(ctx, quiet, log_file)


cli.add_command(space)
cli.add_command(targets)
cli.add_command(predictor)
cli.add_command(search)
cli.add_command(train)
cli.add_command(import_group)
cli.add_command(eval_command)
cli.add_command(export_command)
cli.add_command(verify_command)
cli.add_command(specialize_command)
cli.add_command(benchmark_command)
cli.add_command(demo_command)


def main() -> None:
    """Entry point: exit codes come from `FactoryGroup`; an interrupt exits 130 without a traceback. The
    process runs under exports.gc_policy (import-phase survivors and the heap at exit kept out of collections)."""
    freeze_import_survivors()
    try:
        _main()
    finally:
        freeze_for_exit()


def _main() -> None:
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
