"""policies/ imports only the standard library, numpy and pydantic (house rules)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import policies

ALLOWED = {"numpy", "pydantic", "policies"} | set(sys.stdlib_module_names)
MODULES = sorted(Path(policies.__file__).parent.glob("*.py"))


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_imports_only_pure_dependencies(path: Path) -> None:
    assert _imported_roots(path) - ALLOWED == set()


def test_the_check_sees_the_modules() -> None:
    assert {p.name for p in MODULES} >= {"allocator.py", "latency.py", "router.py"}
    assert "ray" not in ALLOWED
    assert "fastapi" not in ALLOWED
