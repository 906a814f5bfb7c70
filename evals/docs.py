"""Sections of docs/benchmarks.md: each benchmark command rewrites its own section."""

from __future__ import annotations

import os
import platform
import re
from datetime import UTC, datetime
from pathlib import Path

DOCS = Path("docs") / "benchmarks.md"


def machine() -> str:
    py = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{platform.machine()}, {os.cpu_count()} cores, {py}"


def section_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.S)


def render_section(name: str, body: str, command: str, *, stamp: str, machine: str) -> str:
    """The whole text of section ``name`` between and including its markers (pure)."""
    return (
        f"<!-- {name}:start -->\n## {name}\n\n"
        f"Command: `{command}`  \nMachine: {machine}  \nDate: {stamp}\n\n{body.strip()}\n"
        f"<!-- {name}:end -->"
    )


def read_section(name: str, path: str | Path = DOCS) -> str | None:
    """Section ``name`` of the docs file as it stands (markers included), or None."""
    path = Path(path)
    found = section_pattern(name).search(path.read_text()) if path.exists() else None
    return found.group(0) if found else None


def write_section(name: str, body: str, command: str, path: str | Path = DOCS) -> None:
    """Replace (or append) the section `name` of docs/benchmarks.md."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmarks\n\nEach section is rewritten by its command.\n"
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = render_section(name, body, command, stamp=stamp, machine=machine())
    pattern = section_pattern(name)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    path.write_text(text)
