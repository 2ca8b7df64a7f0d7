"""The garbage collector in our short-lived processes that import torch, TensorFlow or MLflow.

Two costs measured here (docs/decisions.md, seventh session), both paid by every process of a demo:
- importing those libraries creates ~600,000 objects, and every full collection during the import walks
  all of them again: torch + MLflow + TensorFlow imported in 8.4-9.5 s, in 5.5-5.9 s with the collector off;
- at interpreter shutdown module teardown runs full collections over every object still alive: 2-6 s a
  process.
`freeze_import_survivors()` moves the survivors of a process's first full collections (the import phase:
modules, classes, functions that live as long as the process) out of the collector's reach, so later
collections walk only newer objects; `exit_now()` freezes what is alive before exiting. Cyclic garbage is
still collected as before among the objects not frozen; an object frozen while alive that later becomes
unreachable through a cycle is not (at most the working set of the first FROZEN_COLLECTIONS collections).

Import-cheap (stdlib only).
"""

from __future__ import annotations

import gc
import sys
from typing import Any, NoReturn

FROZEN_COLLECTIONS = 16  # full collections whose survivors are frozen; imports trigger ~10 in a demo process


class _FreezeSurvivors:
    def __init__(self, collections: int) -> None:
        self.left = collections

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info.get("generation") == 2 and self.left > 0:
            self.left -= 1
            gc.freeze()
            if self.left == 0:
                gc.callbacks.remove(self)


def freeze_import_survivors(collections: int = FROZEN_COLLECTIONS) -> None:
    """From now on, the survivors of this process's next `collections` full collections are frozen (call at
    the start of a process, before its heavy imports; a second call changes nothing)."""
    if not any(isinstance(cb, _FreezeSurvivors) for cb in gc.callbacks):
        gc.callbacks.append(_FreezeSurvivors(collections))


def freeze_for_exit() -> None:
    """Leave the live objects out of the collections that interpreter shutdown runs (call just before exiting)."""
    gc.freeze()


def exit_now(code: int | None = 0) -> NoReturn:
    """sys.exit(code) with the heap frozen first."""
    freeze_for_exit()
    sys.exit(code)
