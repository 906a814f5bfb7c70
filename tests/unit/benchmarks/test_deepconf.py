"""The DeepConf benchmark's own decisions: window scaling and the verdicts."""

from __future__ import annotations

import pytest

from benchmarks.deepconf import scaled_config, verdicts
from evals.confidence_replay import BankSample, Summary
from verifiers.confidence import ConfidenceSource


def _bank(lengths: dict[str, list[int]]) -> dict[str, list[BankSample]]:
    return {
        k: [BankSample("x", True, (1.0,) * n, ConfidenceSource.TOP_K) for n in ns]
        for k, ns in lengths.items()
    }


def test_window_and_tail_are_an_eighth_of_the_median_length() -> None:
    config = scaled_config(_bank({"a": [100, 200, 300], "b": [400, 500]}), warmup=2)
    assert (config.window, config.tail, config.warmup) == (38, 38, 2)  # median 300 / 8


def test_the_window_never_drops_below_eight_tokens() -> None:
    assert scaled_config(_bank({"a": [10]})).window == 8


def _rows(maj: tuple[float, int], weighted: float, stop: tuple[float, int]) -> list[Summary]:
    return [
        Summary("majority@N", 40, maj[0], maj[1]),
        Summary("confidence-weighted@N", 40, weighted, maj[1]),
        Summary("confidence early stop", 40, stop[0], stop[1]),
    ]


@pytest.mark.parametrize(
    ("rows", "stop_verdict", "vote_verdict"),
    [
        pytest.param(_rows((0.5, 1000), 0.55, (0.5, 700)), "**met**", "**met**", id="met"),
        pytest.param(
            _rows((0.5, 1000), 0.5, (0.5, 701)), "**not met**", "**met (a tie)**", id="29.9%"
        ),
        pytest.param(
            _rows((0.5, 1000), 0.45, (0.475, 500)), "**not met**", "**not met**", id="-2.5pt"
        ),
    ],
)
def test_verdicts_are_computed(rows: list[Summary], stop_verdict: str, vote_verdict: str) -> None:
    stop, vote = verdicts(rows, label="x")
    assert stop.endswith(stop_verdict + ".")
    assert vote.endswith(vote_verdict + ".")
