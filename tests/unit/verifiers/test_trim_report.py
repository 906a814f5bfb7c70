"""The issue-16 acceptance verdict: computed from the numbers, every clause checked."""

from __future__ import annotations

import pytest

from verifiers.trim_replay import ReplaySummary, ReplayTotals
from verifiers.trim_report import markdown, verdict


def row(traces: int, saved: float, change: float) -> ReplayTotals:
    return ReplayTotals(
        traces=traces,
        trimmed=0,
        thinking_tokens_before=1000,
        thinking_tokens_after=int(1000 * (1 - saved / 100)),
        saved_pct=saved,
        accuracy_before=90.0,
        accuracy_after=90.0 + change,
        accuracy_change_pt=change,
        lost=0,
        gained=0,
        per_rule={},
        oracle_saved_pct=40.0,
    )


def summary(pooled: ReplayTotals, family: ReplayTotals) -> ReplaySummary:
    return ReplaySummary(judge="rule", pooled=pooled, families={"qwq": family}, groups={})


@pytest.mark.parametrize(
    ("pooled", "family", "met", "clause"),
    [
        pytest.param(row(400, 30.0, -0.4), row(100, 30.0, -1.4), True, "", id="met"),
        pytest.param(row(400, 24.9, 0.0), row(100, 30.0, 0.0), False, "pooled saving", id="saving"),
        pytest.param(row(400, 30.0, -0.6), row(100, 30.0, 0.0), False, "pooled accuracy", id="acc"),
        pytest.param(row(400, 30.0, 0.0), row(100, 30.0, -1.6), False, "family qwq", id="family"),
        pytest.param(row(400, 30.0, 0.0), row(49, 30.0, -9.0), True, "", id="small-family"),
    ],
)
def test_verdict_checks_every_clause(
    pooled: ReplayTotals, family: ReplayTotals, met: bool, clause: str
) -> None:
    ok, failed = verdict(summary(pooled, family))
    assert ok is met
    assert (clause in " ".join(failed)) if clause else not failed
    text = markdown(summary(pooled, family))
    assert f"**{'met' if met else 'missed'}**" in text
    assert "40.0%" in text
