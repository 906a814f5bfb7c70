"""The service's packages import downwards only.

    __main__ -> cli -> api -> {request, doctor} -> {actors, planning} -> {trim, modes, security}
        -> {protocol, metrics} -> {backends, state, models} -> config -> exceptions

A module may import its own package and any layer below its own, never one above or beside it,
so nothing imports ``api`` but ``cli`` and ``config`` imports no logic. Lazy imports inside
functions count too. (``policies`` and ``verifiers`` import nothing of the service: see
``tests/unit/policies/test_purity.py``.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "tts_orchestrator"

LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(layer.split())
    for layer in (
        "__main__",
        "cli",
        "api",
        "request doctor",
        "actors planning",
        "trim modes security",
        "protocol metrics",
        "backends state models",
        "config",
        "exceptions",
    )
)
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _unit(module: str) -> str:
    """The package (or top-level module) of ``tts_orchestrator.X...``."""
    return module.split(".")[1]


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return [m for m in out if m.startswith("tts_orchestrator.")]


FILES = sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT)


def test_every_unit_has_a_layer() -> None:
    units = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in FILES}
    assert units <= set(RANK), f"give these a layer: {sorted(units - set(RANK))}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    own = path.relative_to(ROOT).parts[0].removesuffix(".py")
    upward = [m for m in _imports(path) if _unit(m) != own and RANK.get(_unit(m), -1) <= RANK[own]]
    assert not upward, f"{own} (layer {RANK[own]}) must not import {upward}"


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from tts_orchestrator.api.app import build_app\n")
    assert _imports(bad) == ["tts_orchestrator.api.app"]
    assert RANK[_unit("tts_orchestrator.api.app")] <= RANK["request"]
