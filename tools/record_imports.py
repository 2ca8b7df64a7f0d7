"""Record which installed modules the project's commands import, for tools/install.py to byte-compile only those.

Why: pip byte-compiles every module it installs (~20,000 files, ~50 s of CPU here), while the demo and the test
suite import about a third of them; a module that is never imported never needs its .pyc. Each command runs
with an audit hook (a sitecustomize on PYTHONPATH, so every Python process it starts records too) that notes
the modules read from the venv's site-packages. Run it in a fresh clone, where the demo really trains:

    git clone . /tmp/rec && cd /tmp/rec && make install
    .venv/bin/python tools/record_imports.py 'make demo' '.venv/bin/python -m pytest -q'
    cp tools/install-imports.txt <your clone>/tools/

The list names the locked wheels it was recorded with: after `make lock` it no longer applies (pip then compiles
everything, as before) until it is recorded again.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HOOK = '''import os, sys

def _record(event, args, _out=os.environ["FACTORY_RECORD_IMPORTS"], _site=os.environ["FACTORY_RECORD_SITE"],
            _seen=set(), _file=[]):
    if event != "open" or not isinstance(args[0], str) or not args[0].startswith(_site):
        return
    path = args[0]
    if path.endswith((".py", ".pyc")) and path not in _seen:
        _seen.add(path)
        if not _file:
            _file.append(open(os.path.join(_out, f"{os.getpid()}.txt"), "a", buffering=1))
        _file[0].write(path + "\\n")

sys.addaudithook(_record)
'''


def _install_tool():
    spec = importlib.util.spec_from_file_location("install_tool", ROOT / "tools" / "install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source_of(path: str) -> str:
    """`pkg/__pycache__/mod.cpython-311.pyc` -> `pkg/mod.py` (a source path stays as it is)."""
    if not path.endswith(".pyc"):
        return path
    folder, name = os.path.split(path)
    if os.path.basename(folder) == "__pycache__":
        folder = os.path.dirname(folder)
    return os.path.join(folder, name.split(".")[0] + ".py")


def _at_start(python: str, site: Path) -> list[str]:
    """Modules every interpreter of the venv imports before the hook exists: those of its .pth files (e.g.
    setuptools' _distutils_hack)."""
    code = ("import json, sys; "
            "print(json.dumps([getattr(m, '__file__', None) or '' for m in list(sys.modules.values())]))")
    files = json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)
    return [f for f in files if f.startswith(f"{site}{os.sep}")]


def record(commands: Iterable[str], site: Path, python: str = sys.executable) -> set[str]:
    """Run each shell command with the hook; the site-packages paths of the modules they read (and those the
    venv's interpreter `python` imports at start)."""
    with tempfile.TemporaryDirectory(prefix="factory-imports-") as tmp:
        hook, out = Path(tmp) / "hook", Path(tmp) / "out"
        hook.mkdir()
        out.mkdir()
        (hook / "sitecustomize.py").write_text(HOOK)
        env = {**os.environ, "FACTORY_RECORD_IMPORTS": str(out), "FACTORY_RECORD_SITE": f"{site}{os.sep}",
               "PYTHONPATH": os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH", "")) if p)}
        for command in commands:
            print(f"recording: {command}", flush=True)
            done = subprocess.run(command, shell=True, env=env)
            if done.returncode != 0:
                raise SystemExit(f"record_imports: `{command}` failed (exit {done.returncode}); nothing written")
        read = {line for f in out.iterdir() for line in f.read_text().splitlines() if line}
    read |= set(_at_start(python, site))
    return {os.path.relpath(source_of(p), site) for p in read if Path(source_of(p)).is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commands", nargs="+", help="shell commands to run, e.g. 'make demo'")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"), help="the venv's python")
    parser.add_argument("--out", type=Path, default=None, help="default: tools/install-imports.txt")
    args = parser.parse_args(argv)
    install = _install_tool()
    layout = install.venv_layout(args.python)
    site, root = Path(layout["purelib"]), Path(layout["root"])
    try:
        wheels = install.locked_wheels(args.python, ".[dev]")
    except install.Fallback as why:
        raise SystemExit(f"record_imports: {why}") from None
    theirs = {os.path.relpath(root / rel, site) for rel in install.installed_files(layout, wheels)}
    modules = record(args.commands, site, args.python) & theirs  # not pip's own, nor the project's
    out = args.out or install.IMPORTS
    out.write_text(f"# wheels {install.wheels_key(wheels)}\n"
                   f"# modules of the locked wheels that `{'`, `'.join(args.commands)}` imported "
                   f"(tools/record_imports.py); tools/install.py byte-compiles only these\n"
                   + "".join(f"{m}\n" for m in sorted(modules)))
    print(f"wrote {out}: {len(modules)} modules of {len(wheels)} locked wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
