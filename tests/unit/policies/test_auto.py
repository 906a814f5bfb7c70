"""Auto over a ladder of modes: stage 1, stage-3 answer checks, thresholds, fitting."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from policies.answer_signals import ANSWER_SIGNAL_NAMES
from policies.auto import (
    AutoExample,
    AutoPolicy,
    LadderScores,
    choose_thresholds,
    fit_auto_policy,
    fit_scores,
    ladder_outcome,
    score_examples,
)

LEVELS = ("fast", "slow")


def signals(**values: float) -> dict[str, float]:
    return {name: values.get(name, 0.0) for name in ANSWER_SIGNAL_NAMES}


def examples(n: int = 60) -> list[AutoExample]:
    """Fast answers that hedge are wrong (every third), the others right; slow is always right
    and ten times dearer."""
    out = []
    for i in range(n):
        wrong = i % 3 == 0
        out.append(
            AutoExample(
                problem=f"Problem {i}: how many apples are left if {i} are eaten?",
                signals=(signals(hedges=1.0 if wrong else 0.0, log_chars=5.0), signals()),
                correct=(not wrong, True),
                tokens=(100.0, 1000.0),
            )
        )
    return out


def test_ladder_outcome_adds_the_tokens_of_every_level_that_ran() -> None:
    scores = LadderScores(stage1=np.array([0.9, 0.1, 0.1]), checks=(np.array([0.0, 0.8, 0.2]),))
    correct = np.array([[False, True], [False, True], [True, False]])
    tokens = np.array([[10.0, 100.0], [10.0, 100.0], [10.0, 100.0]])
    ok, spent = ladder_outcome(scores, correct, tokens, start_deepest_at=0.5, escalate_at=(0.5,))
    # straight to slow; fast then escalated; fast kept
    assert spent.tolist() == [100.0, 110.0, 10.0]
    assert ok.tolist() == [True, True, True]


def test_thresholds_are_the_cheapest_within_the_allowed_drop() -> None:
    data = examples()
    scores = LadderScores(
        stage1=np.zeros(len(data)),
        checks=(np.array([0.9 if not e.correct[0] else 0.1 for e in data]),),
    )
    correct = np.array([e.correct for e in data])
    tokens = np.array([e.tokens for e in data])
    t1, (t3,) = choose_thresholds([scores], correct, tokens, max_accuracy_drop=0.0)
    ok, spent = ladder_outcome(scores, correct, tokens, start_deepest_at=t1, escalate_at=(t3,))
    assert ok.all()
    assert spent.mean() == pytest.approx(100 + 1000 / 3)


def test_a_fitted_policy_escalates_the_answers_its_signals_flag() -> None:
    data = examples()
    policy = fit_auto_policy(LEVELS, data, max_accuracy_drop=0.0)
    for e in data:
        start = policy.start(e.problem)
        assert start.level == 0
        assert start.stage == "stage1"
        step = policy.after_answer(0, e.signals[0], start.score)
        assert step.stop is e.correct[0], step.reason
        assert step.reason.startswith("stage 3 (level 0): P(answer wrong)=")
    last = policy.after_answer(1, data[0].signals[1], 0.0)
    assert last.stop
    assert "deepest" in last.reason


def test_a_refuted_claim_escalates_whatever_the_score() -> None:
    data = examples()
    policy = fit_auto_policy(LEVELS, data, max_accuracy_drop=0.0)
    settled = data[1].signals[0]  # a right answer: kept on its score
    assert policy.after_answer(0, settled, 0.0).stop
    step = policy.after_answer(0, {**settled, "claims_refuted": 1.0}, 0.0)
    assert not step.stop
    assert step.level == 1
    assert "claims_refuted → escalate" in step.reason


def test_the_vectorised_ladder_escalates_vetoed_answers() -> None:
    scores = LadderScores(
        stage1=np.zeros(2), checks=(np.array([0.1, 0.1]),), vetoes=(np.array([False, True]),)
    )
    correct = np.array([[True, True], [False, True]])
    tokens = np.array([[10.0, 100.0], [10.0, 100.0]])
    ok, spent = ladder_outcome(scores, correct, tokens, start_deepest_at=2.0, escalate_at=(0.5,))
    assert spent.tolist() == [10.0, 110.0]
    assert ok.all()


def test_scores_mark_the_vetoed_examples() -> None:
    data = examples(12)
    vetoed = data[1].model_copy(
        update={"signals": ({**data[1].signals[0], "claims_refuted": 1.0}, data[1].signals[1])}
    )
    stage1, checks = fit_scores(data)
    scores = score_examples(stage1, checks, [data[1], vetoed])
    assert scores.vetoes[0].tolist() == [False, True]


def test_policy_round_trips_through_json() -> None:
    policy = fit_auto_policy(LEVELS, examples())
    assert AutoPolicy.model_validate_json(policy.model_dump_json()) == policy


def test_policy_needs_one_check_per_level_below_the_deepest() -> None:
    policy = fit_auto_policy(LEVELS, examples())
    with pytest.raises(ValidationError, match="one check per level"):
        AutoPolicy.model_validate(policy.model_dump() | {"levels": ("fast", "mid", "slow")})
