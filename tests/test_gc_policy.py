"""The garbage-collector policy of our processes (exports.gc_policy): the survivors of the first full
collections (the import phase) are frozen, later cyclic garbage is still collected, and a process ends with
its live objects frozen so interpreter shutdown's collections skip them; nothing else about exiting changes
(the exit code, atexit handlers, the output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# an atexit handler registered first runs last: it sees the heap as interpreter shutdown will
PROBE = ("import atexit, gc, sys\n"
         "atexit.register(lambda: sys.stderr.write(f'frozen objects at exit: {gc.get_freeze_count()}\\n'))\n")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def frozen(proc: subprocess.CompletedProcess[str]) -> int:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("frozen objects at exit: ")]
    assert lines, proc.stderr[-2000:]
    return int(lines[-1].rsplit(" ", 1)[1])


def test_the_factory_command_exits_with_its_code_and_the_heap_frozen() -> None:
    ok = run("sys.argv = ['factory', 'space', 'show']\nfrom factory.cli import main\nmain()")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "sub-networks" in ok.stdout
    assert frozen(ok) > 10_000
    bad = run("sys.argv = ['factory', 'space', 'show', '--no-such-option']\nfrom factory.cli import main\nmain()")
    assert bad.returncode == 2
    assert "--no-such-option" in bad.stderr
    assert frozen(bad) > 10_000


def test_exit_now_keeps_the_exit_code_and_the_atexit_handlers() -> None:
    proc = run("atexit.register(lambda: print('handler ran', flush=True))\n"
               "from exports.gc_policy import exit_now\nprint('before', end='')\nexit_now(3)")
    assert proc.returncode == 3
    assert proc.stdout == "before" + "handler ran\n"
    assert frozen(proc) > 1_000


def test_survivors_of_the_first_full_collections_are_frozen_later_garbage_still_collected() -> None:
    proc = run("""
from exports.gc_policy import freeze_import_survivors
freeze_import_survivors(collections=2)
freeze_import_survivors(collections=2)  # a second call adds nothing
class Node:
    def __init__(self):
        self.me = self  # a cycle: only the collector frees it
imported = [Node() for _ in range(50_000)]  # stands in for what an import leaves alive
gc.collect()
after_first = gc.get_freeze_count()
garbage = [Node() for _ in range(1_000)]
del garbage
freed = gc.collect()  # the second full collection: garbage collected, survivors frozen, policy ends
after_second = gc.get_freeze_count()
alive = [Node() for _ in range(1_000)]
gc.collect()
print(after_first, freed, after_second - after_first, gc.get_freeze_count() - after_second)
""")
    assert proc.returncode == 0, proc.stderr[-2000:]
    after_first, freed, frozen_second, frozen_third = map(int, proc.stdout.split())
    assert after_first >= 50_000
    assert freed >= 1_000  # cyclic garbage made after the first freeze is still collected
    assert frozen_second < 1_000  # only what appeared since, not a second copy of the import phase
    assert frozen_third == 0  # after `collections` full collections the policy is off
