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
        # only fast right: the oracle takes fast (50) and counts it right, though slow failed
        "c": {"fast": _outcome(True, 50), "slow": _outcome(False, 400)},
    }
    probes = [
        # a: all three agree on a wrong answer: kept (probe tokens only, 3 x 5)
        *(Probe("a", i, "7", False, 5) for i in range(3)),
        # b: they disagree: escalate to slow (3 x 5 + 500, slow's outcome)
        Probe("b", 0, "1", True, 5),
        Probe("b", 1, "2", False, 5),
        Probe("b", 2, None, False, 5),
        # c: all three agree on the right answer: kept
        *(Probe("c", i, "5", True, 5) for i in range(3)),
    ]
    text = tables(run, probes, k=3)
    assert "| slow everywhere | 66.7% | 400 | +0% |" in text
    assert "| fast everywhere | 66.7% | 117 | -71% |" in text
    # a fast (100, right) + b slow (500, right) + c fast (50, right): more right than slow
    assert "| oracle (cheapest correct mode per problem) | 100.0% | 217 | -46% |" in text
    # 9 samples, 4 right; a and c unanimous, c's right; probe-else-slow: a wrong, b slow's
    # right, c right = 2/3, (15 + 515 + 15) / 3 tokens
    assert "| 9 | 44.4% | 5.0 | 2/3 | 1/2 | 66.7% | 182 | -55% |" in text
    assert "saves at most 46% here even with an oracle" in text
