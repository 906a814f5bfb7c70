"""The pure parts of the TrimR throughput benchmark: evidence parsing, ratios, the table."""

from __future__ import annotations

import math
from typing import Any

import pytest

from benchmarks.common import StreamTiming
from benchmarks.trim_throughput import (
    RULES,
    ArmResult,
    body,
    engaged,
    ratio,
    record_evidence,
    round_throughput,
    summary,
    table,
    verifier_processed,
)
from tts_orchestrator.protocol import ChatCompletionRequest
from verifiers.trimr import TrimRConfig, TrimRule


def _timing(tokens: int, ttft: float, total: float) -> StreamTiming:
    return StreamTiming(ttft_s=ttft, total_s=total, completion_tokens=tokens)


def _arm(
    *tps: float, checks: int = 0, slow: int | None = None, trims: int = 0, closes: int = 0
) -> ArmResult:
    # 101 tokens over (1 + 100 / tps) - 1 seconds of decode: exactly `tps` tokens/s each.
    timings = [_timing(101, 1.0, 1.0 + 100 / t) for t in tps]
    return ArmResult(
        timings=timings,
        round_tps=[sum(tps)],
        checks=checks,
        slow=len(tps) if slow is None else slow,
        trims=trims,
        closes=closes,
    )


@pytest.mark.parametrize(
    ("pools", "expected"),
    [
        pytest.param({"verifiers": [{"processed": 3}, {"processed": 4}]}, 7, id="summed"),
        pytest.param({"verifiers": [{"processed": 2}, {"error": "ActorDied"}]}, 2, id="dead-skip"),
        pytest.param({"verifiers": []}, 0, id="no-verifiers"),
        pytest.param({"data": []}, 0, id="field-missing"),
    ],
)
def test_verifier_processed_sums_the_live_actors(pools: dict[str, Any], expected: int) -> None:
    assert verifier_processed(pools) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param({"mode": {"mode": "slow"}, "trims": None}, (True, 0, 0), id="slow-untrimmed"),
        pytest.param(
            {"mode": {"mode": "slow"}, "trims": {"interventions": [{"rule": "overthinking"}]}},
            (True, 1, 0),
            id="slow-trimmed",
        ),
        pytest.param(
            {"mode": {"mode": "slow"}, "trims": {"interventions": [{"rule": "thinking_budget"}]}},
            (True, 0, 1),
            id="answer-reserve-close",
        ),
        pytest.param({"mode": {"mode": "fast"}}, (False, 0, 0), id="fast"),
        pytest.param({"mode": None, "trims": None}, (False, 0, 0), id="no-mode"),
    ],
)
def test_record_evidence(record: dict[str, Any], expected: tuple[bool, int, int]) -> None:
    assert record_evidence(record) == expected


def test_decode_p50_skips_single_token_streams() -> None:
    arm = _arm(10.0, 20.0, 30.0)
    arm.timings.append(_timing(1, 1.0, 1.0))
    assert arm.decode_p50 == pytest.approx(20.0)
    assert arm.tokens == 3 * 101 + 1


def test_round_throughput_is_all_tokens_over_wall() -> None:
    assert round_throughput([_timing(100, 0.1, 4.0), _timing(60, 0.1, 3.0)], 4.0) == 40.0
    assert round_throughput([_timing(100, 0.1, 4.0)], 0.0) == 0.0


@pytest.mark.parametrize(
    ("on", "off", "expected"),
    [
        pytest.param(19.8, 20.0, 0.99, id="slower"),
        pytest.param(20.0, 0.0, math.nan, id="off-zero"),
        pytest.param(20.0, math.nan, math.nan, id="off-nan"),
    ],
)
def test_ratio(on: float, off: float, expected: float) -> None:
    assert ratio(on, off) == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize(
    ("off", "on", "expected"),
    [
        pytest.param(_arm(20.0), _arm(20.0, checks=5), True, id="checks-only-in-on"),
        pytest.param(_arm(20.0), _arm(20.0), False, id="no-checks"),
        pytest.param(_arm(20.0, checks=1), _arm(20.0, checks=5), False, id="checks-leak-into-off"),
        pytest.param(_arm(20.0), _arm(20.0, checks=5, slow=0), False, id="not-slow"),
        pytest.param(_arm(20.0), _arm(20.0, checks=5, trims=1), False, id="a-trim"),
        pytest.param(_arm(20.0, closes=2), _arm(20.0, checks=5, closes=2), True, id="same-closes"),
        pytest.param(
            _arm(20.0, closes=2), _arm(20.0, checks=5, closes=1), False, id="closes-differ"
        ),
        pytest.param(ArmResult(), ArmResult(checks=5), False, id="no-requests"),
    ],
)
def test_engaged(off: ArmResult, on: ArmResult, expected: bool) -> None:
    assert engaged(off, on) is expected


def test_table_and_summary() -> None:
    off, on = _arm(20.0, 22.0), _arm(19.9, 21.9, checks=12)
    rows = table(off, on).splitlines()
    assert len(rows) == 4
    assert rows[2].startswith("| off | 2 | 202 | 21.00 | 42.00 | 2/2 | 0 | 0 | 0 |")
    assert rows[3].startswith("| on | 2 | 202 | 20.90 | 41.80 | 2/2 | 12 | 0 | 0 |")
    text = summary(off, on)
    assert "**0.995**" in text
    assert ": met" in text
    assert "Warning" not in text
    assert "NOT met" in summary(off, _arm(15.0, 16.0, checks=3))
    assert "Warning" in summary(off, _arm(20.0, 22.0))


def test_rules_can_check_but_never_fire() -> None:
    config = TrimRConfig.model_validate(RULES)
    assert config.rules == frozenset({TrimRule.OVERTHINKING})
    assert config.overthink_m >= 10_000


@pytest.mark.parametrize("trim", [False, True], ids=["off", "on"])
def test_both_arms_send_the_same_valid_request_but_for_trim(trim: bool) -> None:
    sent = body(trim=trim, seed=7, question="What is 2 + 2?", max_tokens=64)
    other = body(trim=not trim, seed=7, question="What is 2 + 2?", max_tokens=64)
    assert {**sent, "tts": None} == {**other, "tts": None}
    request = ChatCompletionRequest.model_validate(sent)
    assert request.tts is not None
    assert request.tts.trim is trim
    assert request.tts.thinking_budget is not None
    assert request.tts.thinking_budget > 64
