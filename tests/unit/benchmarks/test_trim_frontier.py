"""The TrimR frontier table: which settings meet the target, and its summary line."""

from __future__ import annotations

from benchmarks.trim_frontier import table
from verifiers.trim_replay import ReplayTotals


def _totals(saved: float, change: float) -> ReplayTotals:
    return ReplayTotals(
        traces=10,
        trimmed=3,
        thinking_tokens_before=1000,
        thinking_tokens_after=int(1000 * (1 - saved / 100)),
        saved_pct=saved,
        accuracy_before=80.0,
        accuracy_after=80.0 + change,
        accuracy_change_pt=change,
        lost=0,
        gained=0,
        per_rule={},
    )


def test_table_marks_the_target_and_summarises_the_frontier() -> None:
    text = table(
        [
            (2, None, False, _totals(6.0, 0.0)),
            (1, 8, False, _totals(32.0, -12.0)),
            (1, 6, True, _totals(31.0, -0.5)),
        ]
    )
    assert "| 2 | off | off | 3 | 6.0% | +0.0 pt | no |" in text
    assert "| 1 | 8 | off | 3 | 32.0% | -12.0 pt | no |" in text
    assert "| 1 | 6 | on | 3 | 31.0% | -0.5 pt | yes |" in text
    assert "most saved within 1 pt: 31.0% (M = 1, N = 6)" in text
    assert "the cheapest setting saving ≥ 30% costs -0.5 pt (M = 1, N = 6)" in text
