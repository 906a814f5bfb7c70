"""The auto-mode headroom tables: the oracle's choice and probe-then-escalate accounting."""

from __future__ import annotations

from typing import Any

from benchmarks.mode_headroom import Probe, tables


def _outcome(correct: bool, tokens: int) -> dict[str, Any]:
    return {"correct": correct, "tokens": tokens}


def test_oracle_takes_the_cheapest_correct_mode_and_probes_escalate_unless_unanimous() -> None:
    run = {
        # both right: the oracle takes the cheaper (fast, 100)
        "a": {"fast": _outcome(True, 100), "slow": _outcome(True, 300)},
        # only slow right: the oracle pays slow (500)
        "b": {"fast": _outcome(False, 200), "slow": _outcome(True, 500)},
    }
    probes = [
        # a: all three agree on a wrong answer: kept (probe tokens only, 3 x 5)
        *(Probe("a", i, "7", False, 5) for i in range(3)),
        # b: they disagree: escalate to slow (3 x 5 + 500, slow's outcome)
        Probe("b", 0, "1", True, 5),
        Probe("b", 1, "2", False, 5),
        Probe("b", 2, None, False, 5),
    ]
    text = tables(run, probes, k=3)
    assert "| slow everywhere | 100.0% | 400 | +0% |" in text
    assert "| fast everywhere | 50.0% | 150 | -62% |" in text
    assert "| oracle (cheapest correct mode per problem) | 100.0% | 300 | -25% |" in text
    # 6 samples, 1 right; a unanimous (wrong); probe-else-slow: 1/2 right, (15 + 515) / 2 tokens
    assert "| 6 | 16.7% | 5.0 | 1/2 | 0/1 | 50.0% | 265 | -34% |" in text
    assert "saves at most 25% here even with an oracle" in text
