from __future__ import annotations

from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from policies.accuracy import (
    AccuracyModel,
    BranchSample,
    DefaultAccuracyCurve,
    ProblemSamples,
    SaturatingCurve,
)
from policies.modes import ThinkingMode


def _problem(
    pid: str,
    answers: Sequence[tuple[str | None, bool, int | None]],
    *,
    difficulty: str | None = None,
    dataset: str = "math500",
    mode: ThinkingMode = ThinkingMode.SLOW,
) -> ProblemSamples:
    return ProblemSamples(
        problem_id=pid,
        dataset=dataset,
        difficulty=difficulty,
        mode=mode,
        samples=tuple(BranchSample(answer=a, correct=c, length=n) for a, c, n in answers),
    )


def _fit(records: list[ProblemSamples], **kwargs: object) -> AccuracyModel:
    options: dict[str, object] = {"n_values": (1, 2, 4, 8), "n_bootstrap": 4000, "seed": 0}
    options.update(kwargs)
    return AccuracyModel.fit(records, **options)  # type: ignore[arg-type]


# Exact maj@N values for one problem whose branches answer A (correct) with probability p and B
# otherwise: P(A wins) + P(tie) / 2, from the binomial distribution.
# p = 2/3: N=1 -> 2/3; N=2 -> 4/9 + (4/9)/2 = 2/3; N=4 -> P(>=3 A) + P(2 A)/2
EXACT = [
    pytest.param(1, 2 / 3, id="maj@1"),
    pytest.param(2, 2 / 3, id="maj@2-ties-split"),
    pytest.param(4, (16 / 81 + 32 / 81) + (24 / 81) / 2, id="maj@4"),
]


@pytest.mark.parametrize(("n", "expected"), EXACT)
def test_bootstrap_majority_vote_matches_the_binomial(n: int, expected: float) -> None:
    model = _fit([_problem("p", [("A", True, None), ("A", True, None), ("B", False, None)])])
    assert model.accuracy(n) == pytest.approx(expected, abs=0.015)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        pytest.param([("A", True, None)] * 3, 1.0, id="all-correct"),
        pytest.param([("B", False, None), ("C", False, None)], 0.0, id="all-wrong"),
        pytest.param([(None, False, None)] * 2, 0.0, id="no-answers"),
    ],
)
def test_trivial_problems(
    answers: list[tuple[str | None, bool, int | None]], expected: float
) -> None:
    model = _fit([_problem("p", answers)])
    assert [model.accuracy(n) for n in (1, 4, 8)] == [expected] * 3


def test_voting_amplifies_a_majority_and_hurts_a_minority() -> None:
    majority = _fit([_problem("p", [("A", True, None)] * 3 + [("B", False, None)] * 2)])
    minority = _fit([_problem("p", [("A", True, None)] * 2 + [("B", False, None)] * 3)])
    assert majority.accuracy(8) > majority.accuracy(1)
    assert minority.accuracy(8) < minority.accuracy(1)


def test_budget_truncation_turns_long_branches_into_non_votes() -> None:
    # The correct branches are long, the wrong one short: a tight budget leaves only the wrong.
    record = _problem("p", [("A", True, 3000), ("A", True, 2500), ("B", False, 400)])
    model = _fit([record], budgets=(500, 2600))
    assert model.accuracy(1, thinking_budget=500) == pytest.approx(0.0)
    assert model.accuracy(1, thinking_budget=2600) == pytest.approx(1 / 3, abs=0.02)
    assert model.accuracy(1) == pytest.approx(2 / 3, abs=0.02)
    # budgets between grid points interpolate; from the longest branch on nothing is cut
    between = model.accuracy(1, thinking_budget=1550)
    assert 0.0 < between < model.accuracy(1, thinking_budget=2600)
    assert model.accuracy(1, thinking_budget=10_000) == model.accuracy(1)
    assert model.accuracy(1, thinking_budget=0) == 0.0


def test_fit_is_deterministic_and_independent_of_other_problems() -> None:
    a = _problem("a", [("A", True, None), ("B", False, None), ("C", False, None)])
    b = _problem("b", [("X", True, None), ("X", True, None), ("Y", False, None)])
    first = AccuracyModel.fit([a, b], n_bootstrap=50, seed=3)
    assert AccuracyModel.fit([a, b], n_bootstrap=50, seed=3) == first
    alone = AccuracyModel.fit([a], n_bootstrap=50, seed=3)
    with_other = AccuracyModel.fit([a, b], n_bootstrap=50, seed=3)
    mean = (alone.accuracy(4) + AccuracyModel.fit([b], n_bootstrap=50, seed=3).accuracy(4)) / 2
    assert with_other.accuracy(4) == pytest.approx(mean)


def test_lookup_falls_back_from_difficulty_to_dataset_to_default() -> None:
    easy = _problem("e", [("A", True, None)] * 2, difficulty="level-1")
    hard = _problem("h", [("B", False, None)] * 2, difficulty="level-5")
    model = _fit([easy, hard])
    assert model.accuracy(2, difficulty="level-1") == 1.0
    assert model.accuracy(2, difficulty="level-5") == 0.0
    assert model.accuracy(2, difficulty="level-9") == pytest.approx(0.5)  # dataset pool
    assert model.accuracy(2, dataset="aime") == pytest.approx(0.5)  # all datasets pooled
    fast = model.accuracy(2, mode=ThinkingMode.FAST)  # no fast logs at all
    assert fast == DefaultAccuracyCurve().accuracy(2, mode=ThinkingMode.FAST)


def test_between_and_beyond_fitted_n() -> None:
    model = _fit([_problem("p", [("A", True, None)] * 3 + [("B", False, None)] * 2)])
    assert model.accuracy(1) < model.accuracy(3) < model.accuracy(4)
    assert model.accuracy(64) == model.accuracy(8)  # clamped, not extrapolated


def test_accuracy_model_round_trips_through_json() -> None:
    model = _fit([_problem("p", [("A", True, 10), ("B", False, 20)])], budgets=(15,))
    again = AccuracyModel.model_validate_json(model.model_dump_json())
    assert again == model
    assert again.accuracy(4, thinking_budget=15) == model.accuracy(4, thinking_budget=15)


def test_fit_rejects_empty_input() -> None:
    with pytest.raises(ValueError):
        AccuracyModel.fit([])


@pytest.mark.parametrize(
    ("n", "budget", "expected"),
    [
        pytest.param(1, None, 0.5, id="one-branch"),
        pytest.param(4, None, 0.8 - 0.3 * 4**-0.5, id="four-branches"),
        pytest.param(1, 1000, 0.5 * (1 - 2.718281828459045**-1), id="budget-at-scale"),
    ],
)
def test_saturating_curve_formula(n: int, budget: int | None, expected: float) -> None:
    curve = SaturatingCurve(a_1=0.5, a_inf=0.8, alpha=0.5, budget_scale_tokens=1000)
    assert curve.value(n, budget) == pytest.approx(expected)


def test_default_curve_is_monotone_and_below_its_limit() -> None:
    default = DefaultAccuracyCurve()
    for mode in (ThinkingMode.SLOW, ThinkingMode.FAST):
        by_n = [default.accuracy(n, mode=mode) for n in (1, 2, 4, 8, 16, 64)]
        assert by_n == sorted(by_n)
        assert by_n[-1] < default.curves[mode].a_inf
    by_budget = [default.accuracy(4, thinking_budget=b) for b in (256, 1024, 4096)]
    assert by_budget == sorted(by_budget)
    assert by_budget[-1] < default.accuracy(4)
    assert default.accuracy(1, mode=ThinkingMode.FAST) < default.accuracy(1)


def test_curve_rejects_a_limit_below_one_branch() -> None:
    with pytest.raises(ValidationError, match="a_inf"):
        SaturatingCurve(a_1=0.7, a_inf=0.6, alpha=1.0)
