"""Domain failures and their exit codes (0 ok, 1 failure, 2 usage, 3 infeasible, 4 gate refused), and
the one way a missing or unparsable user file becomes a UserInputError that names it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class FactoryError(Exception):
    """A failure the user should read, not a traceback. `exit_code` is what the CLI returns."""

    exit_code = 1


class UserInputError(FactoryError, ValueError):
    """Bad input from the user (file, field, value): the message says what is allowed."""

    exit_code = 2


class InfeasibleTargetError(FactoryError):
    exit_code = 3


class VerificationError(FactoryError):
    exit_code = 4


class SomeFailedError(FactoryError):
    """Several independent steps ran and some failed (`factory specialize`'s targets); the exit code is
    `combined_exit_code` of their failures."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def combined_exit_code(codes: Iterable[int]) -> int:
    """The one rule for several failures: 0 when none failed; when every failure is of one kind, that
    kind's code (3 all infeasible, 4 all refused by the gate, ...); mixed kinds -> 1."""
    failed = {code for code in codes if code != 0}
    if not failed:
        return 0
    return failed.pop() if len(failed) == 1 else 1


def parse_text_file(path: Path, parse: Callable[[str], T], fmt: str, missing: str) -> T:
    """`parse(path.read_text())`, with the user's file named in the error: `missing` says what an absent
    file means; a parse error (any ValueError, e.g. JSON, TOML, bad UTF-8) says "not valid `fmt`"."""
    try:
        return parse(Path(path).read_text())
    except FileNotFoundError:
        raise UserInputError(f"{path}: {missing}") from None
    except UserInputError:
        raise
    except ValueError as exc:
        raise UserInputError(f"{path}: not valid {fmt} ({exc})") from None
