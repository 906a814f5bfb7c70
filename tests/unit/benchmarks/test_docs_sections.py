"""Sections of docs/benchmarks.md are what their commands write: one is regenerated here from
its recorded result (benchmarks/results/) and must equal the committed text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.modes import (
    SECTION,
    load_outcomes,
    modes_body,
    parse_args,
    recorded_command,
    target_check,
)
from evals.docs import read_section, render_section, write_section

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "benchmarks.md"
RECORDED = "benchmarks/results/modes-30.jsonl"


def _stamps(section: str) -> tuple[str, str]:
    machine = re.search(r"^Machine: (.*?)  $", section, re.M)
    date = re.search(r"^Date: (.*)$", section, re.M)
    assert machine, section[:300]
    assert date, section[:300]
    return machine.group(1), date.group(1)


def test_modes_section_is_regenerated_from_the_recorded_run() -> None:
    committed = read_section(SECTION, DOCS)
    assert committed is not None
    machine, stamp = _stamps(committed)  # when and where it was rendered: inputs, not content
    args = parse_args(["--from", RECORDED])  # the defaults the command renders with
    body = modes_body(
        load_outcomes(ROOT / RECORDED),
        modes=("fast", "slow", "auto"),
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
        recorded=RECORDED,
    )
    regenerated = render_section(
        SECTION, body, recorded_command(RECORDED), stamp=stamp, machine=machine
    )
    assert regenerated == committed


@pytest.mark.parametrize(
    ("fast_slow_auto_tokens", "auto_right", "verdict"),
    [
        pytest.param((400, 600, 400), 2, "**met**: auto -33% tokens and +0.0 pt", id="met"),
        pytest.param((400, 600, 500), 2, "**missed**: auto -17% tokens", id="too-few-saved"),
        pytest.param((400, 600, 400), 1, "**missed**: auto -33% tokens and -50.0 pt", id="drop"),
    ],
)
def test_the_modes_target_is_computed(
    fast_slow_auto_tokens: tuple[int, int, int], auto_right: int, verdict: str
) -> None:
    from benchmarks.modes import Outcome

    outcomes = []
    for mode, tokens in zip(("fast", "slow", "auto"), fast_slow_auto_tokens, strict=True):
        right = auto_right if mode == "auto" else 2
        outcomes += [Outcome(mode, f"p{i}", 1, i < right, tokens, 1.0, mode, 0) for i in range(2)]
    assert verdict in target_check(outcomes)


def test_write_section_keeps_backslashes_literal(tmp_path: Path) -> None:
    path = tmp_path / "bench.md"
    write_section("S", "first", "cmd", path)
    write_section("S", r"only `\boxed{...}` and \n stay as written", "cmd", path)
    section = read_section("S", path)
    assert section is not None
    assert r"only `\boxed{...}` and \n stay as written" in section
