"""The DeepConf benchmark's own decisions: window scaling, the verdicts, a backed default."""

from __future__ import annotations

import pytest

from benchmarks.deepconf import CrossValidation, render_cv, scaled_config, verdicts
from evals.confidence_replay import BankSample, Outcome, Summary
from evals.confidence_selection import FoldResult, GridRun
from verifiers.confidence import ConfidenceConfig, ConfidenceSource


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


def _grid(stop_tokens: list[int]) -> GridRun:
    """Two problems; majority right on p0 only; grid point k's early stop spends
    ``stop_tokens[k]`` a problem with majority's grades, its weighted vote the same grades."""
    grades = {"p0": True, "p1": False}

    def out(tokens: int) -> dict[str, Outcome]:
        return {i: Outcome(correct=c, tokens=tokens) for i, c in grades.items()}

    return GridRun(
        configs=[ConfidenceConfig(warmup=k + 2) for k in range(len(stop_tokens))],
        majority=out(100),
        stop=[out(t) for t in stop_tokens],
        weighted=[out(100) for _ in stop_tokens],
    )


@pytest.mark.parametrize(
    ("chosen", "stop_tokens", "backed"),
    [
        pytest.param((1, 1), [90, 50], True, id="stable-and-met"),
        pytest.param((0, 1), [90, 50], False, id="unstable"),
        pytest.param((0, 0), [90, 50], False, id="stable-not-met"),
    ],
)
def test_a_default_is_backed_only_when_stable_and_the_estimate_meets_the_targets(
    chosen: tuple[int, int], stop_tokens: list[int], backed: bool
) -> None:
    grid = _grid(stop_tokens)
    fold_results = [
        FoldResult(["p0"], ["p1"], chosen[0]),
        FoldResult(["p1"], ["p0"], chosen[1]),
    ]
    text = "\n".join(render_cv(CrossValidation(grid, fold_results, grid), "pool", "every"))
    assert f"default (both of the above): **{'yes' if backed else 'no'}**" in text
    assert ("(in-sample: shown, not the estimate)" in text) == backed


def test_a_choice_that_differs_from_the_defaults_says_where() -> None:
    grid = _grid([50, 50])  # point 0: warmup 2, point 1: warmup 3 (the default)
    for index, says in [(0, "**no** (warmup: 2 chosen, 3 by default)"), (1, "**yes**")]:
        fold_results = [FoldResult(["p0"], ["p1"], index), FoldResult(["p1"], ["p0"], index)]
        text = "\n".join(render_cv(CrossValidation(grid, fold_results, grid), "pool", "every"))
        assert f"are this choice: {says}" in text
