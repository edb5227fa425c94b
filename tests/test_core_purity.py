"""The protocol core does no I/O (DESIGN.md section 2): nothing under core/ may import it."""

from __future__ import annotations

import ast
from pathlib import Path

import pyderecho.core

FORBIDDEN = {
    "asyncio",
    "os",
    "random",
    "selectors",
    "socket",
    "subprocess",
    "threading",
    "time",
}
CORE = Path(pyderecho.core.__file__).parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_exist() -> None:
    assert len(list(CORE.glob("*.py"))) >= 5


def test_core_imports_no_io() -> None:
    offenders = {
        str(path.relative_to(CORE)): sorted(imported_modules(path) & FORBIDDEN)
        for path in sorted(CORE.rglob("*.py"))
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    planted = tmp_path / "bad.py"
    planted.write_text("import os\nfrom time import monotonic\nfrom . import sibling\n")
    assert imported_modules(planted) & FORBIDDEN == {"os", "time"}
