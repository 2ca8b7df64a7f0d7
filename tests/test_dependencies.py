"""The dependency direction of the four packages (docs/DESIGN.md), checked on every import statement.

factory -> {targets, exports, supernets}; targets -> exports -> supernets; nothing back. Imports inside
functions count too: a function-level import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# package -> the project packages it must never import (at module level or inside a function)
FORBIDDEN: dict[str, frozenset[str]] = {
    "supernets": frozenset({"exports", "targets", "factory"}),
    "exports": frozenset({"targets", "factory"}),
    "targets": frozenset({"factory"}),
    "factory": frozenset(),
}


def imported_packages(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `source`, however deeply nested."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str) -> list[str]:
    """`file:line imports X` for each import of `package` that goes against the direction."""
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, imported in imported_packages(path.read_text(), str(path)):
            if imported in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return bad


def test_the_checker_sees_imports_inside_functions():
    source = "import numpy\n\ndef f():\n    from targets import profile\n    import factory.cli\n"
    assert imported_packages(source, "<test>") == [(1, "numpy"), (4, "targets"), (5, "factory")]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_against_the_dependency_direction(package: str):
    assert list((ROOT / package).rglob("*.py")), f"{package}/ has no Python files"
    assert violations(package) == []
