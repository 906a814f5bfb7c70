"""The branch-parallel benchmark's verdicts and claims are computed from its rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.branches_report import (
    SECTION,
    BranchesResult,
    ConcurrencyRow,
    ThroughputRow,
    branches_body,
    concurrency_claim,
    recorded_command,
    throughput_verdict,
)
from evals.docs import read_section, render_section

ROOT = Path(__file__).resolve().parents[3]
RECORDED = "benchmarks/results/branches-2026-11-22.json"


def _levels(*added: float) -> list[ConcurrencyRow]:
    ns = (1, 8, 16, 32, 64, 128, 256)
    return [
        ConcurrencyRow.measured(n, 800, 100.0, 8.0 * (1 + a))
        for n, a in zip(ns[: len(added)], added, strict=True)
    ]


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [
        pytest.param(0.719, "ratio **0.719** against the ≥ 0.97 target: **missed**", id="missed"),
        pytest.param(0.97, "ratio **0.970** against the ≥ 0.97 target: **met**", id="at-target"),
        pytest.param(1.01, "ratio **1.010** against the ≥ 0.97 target: **met**", id="above"),
    ],
)
def test_n8_ratio_is_printed_against_its_target(ratio: float, expected: str) -> None:
    rows = [ThroughputRow(4, 3, 60.0, 60.0, 1.0), ThroughputRow(8, 3, 100.0, 100 * ratio, ratio)]
    assert expected in throughput_verdict(rows)
    assert "not measured" in throughput_verdict(rows[:1])


def test_no_failure_reached_says_largest_tried_not_a_limit() -> None:
    claim = concurrency_claim(_levels(0.004, 0.008, 0.01, 0.01, 0.02, 0.03, 0.054))
    assert "largest tried, **256 concurrent branches** (+5.4%)" in claim
    assert "lower bound" in claim
    assert "not a limit found" in claim
    assert "sustains **" not in claim


def test_a_failed_level_bounds_the_claim() -> None:
    claim = concurrency_claim(_levels(0.004, 0.008, 0.01, 0.05, 0.12))
    assert claim.startswith("One orchestrator process sustains **32 concurrent branches**")
    assert "64 added +12.0%" in claim
    assert "largest tried" not in claim
    assert "Even 1 branches" in concurrency_claim(_levels(0.2))


def test_result_round_trips_through_its_file(tmp_path: Path) -> None:
    result = BranchesResult.load(ROOT / RECORDED)
    result.save(tmp_path / "r.json")
    assert BranchesResult.load(tmp_path / "r.json") == result
    assert [r.n for r in result.throughput] == [4, 8]


def test_branches_section_is_regenerated_from_the_recorded_result() -> None:
    committed = read_section(SECTION, ROOT / "docs" / "benchmarks.md")
    assert committed is not None
    machine = committed.split("Machine: ", 1)[1].split("  \n", 1)[0]
    stamp = committed.split("Date: ", 1)[1].split("\n", 1)[0]
    body = branches_body(BranchesResult.load(ROOT / RECORDED), recorded=RECORDED)
    assert (
        render_section(SECTION, body, recorded_command(RECORDED), stamp=stamp, machine=machine)
        == committed
    )
