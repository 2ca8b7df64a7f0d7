"""Progress output that reads well anywhere: a live bar on an interactive terminal, nothing else.

Off a terminal (CI, nohup, a scheduler's log file, `--log-file`, `--quiet`), carriage-return frames
would fill the log with one copy of the bar per refresh; callers print one line per epoch, table or
target instead. The CLI sets FACTORY_QUIET / FACTORY_LOG_FILE for itself and its child processes.

Import-cheap (stdlib; tqdm is imported when a bar is made).
"""

from __future__ import annotations

import os
import sys
from typing import Any

QUIET_ENV = "FACTORY_QUIET"
LOG_FILE_ENV = "FACTORY_LOG_FILE"


def quiet() -> bool:
    """--quiet: only warnings, errors and the final summary."""
    return os.environ.get(QUIET_ENV) == "1"


def live_bars() -> bool:
    """Live progress bars only on an interactive terminal, and not under --quiet or --log-file."""
    if quiet() or os.environ.get(LOG_FILE_ENV):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress_bar(*, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr, disabled off a terminal (see module docstring) or when not `enabled`."""
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    return tqdm(disable=not (enabled and live_bars()), **kwargs)
