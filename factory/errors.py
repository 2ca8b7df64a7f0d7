"""Domain failures and their exit codes (0 ok, 1 failure, 2 usage, 3 infeasible, 4 gate refused)."""

from __future__ import annotations


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
