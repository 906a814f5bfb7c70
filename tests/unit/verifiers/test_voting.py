"""Clustering, votes, early-stop rules and the Beta CDF behind Adaptive-Consistency."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction

import numpy as np
import pytest
from pydantic import ValidationError

from verifiers.beta import beta_cdf, beta_sf, prob_beats_runner_up
from verifiers.equivalence import verify_pair
from verifiers.voting import (
    EARLY_STOP_RULES,
    Aggregation,
    AnswerClusterer,
    AnyOf,
    BetaConsensus,
    BranchAnswer,
    EarlyStopKind,
    EarlyStopRule,
    NoEarlyStop,
    SafeLead,
    UnanimousWindow,
    VoteState,
    cluster_answers,
    vote_answers,
)

# A fast stand-in for math-verify: answers in the same class are equivalent.
CLASSES = {
    r"\frac{1}{2}": "half",
    "0.5": "half",
    "1/2": "half",
    "3": "three",
    "3.0": "three",
    "7": "seven",
}


class FakeEquivalence:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, gold: str, pred: str) -> bool:
        self.calls.append((gold, pred))
        return CLASSES.get(gold, gold) == CLASSES.get(pred, pred)


def branches(*answers: str | None, logprobs: tuple[float | None, ...] = ()) -> list[BranchAnswer]:
    """Branch i finishes at time i."""
    return [
        BranchAnswer(
            branch_id=f"b{i}",
            answer=a,
            finished_at=float(i),
            mean_logprob=logprobs[i] if i < len(logprobs) else None,
        )
        for i, a in enumerate(answers)
    ]


async def test_equivalent_but_different_answers_share_a_cluster() -> None:
    eq = FakeEquivalence()
    clusters = await cluster_answers(branches(r"\frac{1}{2}", "3", "0.5", "1/2", None), eq)
    assert [(c.answer, c.branch_ids, c.count) for c in clusters] == [
        (r"\frac{1}{2}", ["b0", "b2", "b3"], 3),
        ("3", ["b1"], 1),
    ]


async def test_same_normalised_text_needs_no_equivalence_call() -> None:
    eq = FakeEquivalence()
    await cluster_answers(branches(r"\dfrac{1}{2}", r"\frac12", r"$\frac{1}{2}$"), eq)
    assert eq.calls == []


async def test_clustering_follows_finish_order_not_input_order() -> None:
    late = BranchAnswer(branch_id="late", answer="7", finished_at=5.0)
    early = BranchAnswer(branch_id="early", answer="3", finished_at=1.0)
    clusters = await cluster_answers([late, early], FakeEquivalence())
    assert [c.branch_ids for c in clusters] == [["early"], ["late"]]


async def test_clustering_with_real_math_verify() -> None:
    async def equivalent(gold: str, pred: str) -> bool:
        return await asyncio.to_thread(verify_pair, gold, pred)

    result = await vote_answers(
        branches("0.5", r"\frac{1}{2}", "2", "1000000", "1000001"), equivalent
    )
    assert [c.count for c in result.clusters] == [2, 1, 1, 1]
    assert result.winner == "0.5"


@pytest.mark.parametrize(
    ("answers", "logprobs", "aggregation", "winner", "reason_part"),
    [
        pytest.param(
            ("3", "0.5", r"\frac{1}{2}"), (), Aggregation.MAJORITY, "0.5", "2 of 3", id="majority"
        ),
        pytest.param(
            ("3", "0.5", "3.0", "1/2"), (), Aggregation.MAJORITY, "3", "tie", id="tie-earliest-wins"
        ),
        pytest.param(
            ("0.5", "3", "3.0", "1/2"), (), Aggregation.MAJORITY, "0.5", "tie", id="tie-other-order"
        ),
        pytest.param(
            (None, None, None, "7"),
            (),
            Aggregation.MAJORITY,
            "7",
            "1 of 1",
            id="unparseable-never-win",
        ),
        pytest.param(
            ("3", "0.5", "1/2"),
            (-0.1, -3.0, -3.0),
            Aggregation.WEIGHTED,
            "3",
            "weight",
            id="weighted-overturns",
        ),
        pytest.param(
            ("3", "0.5", "1/2"),
            (-0.5, -0.5, -0.5),
            Aggregation.WEIGHTED,
            "0.5",
            "weight",
            id="weighted-equal-is-majority",
        ),
        pytest.param(
            ("3", "0.5", "1/2"),
            (-0.1, None, None),
            Aggregation.WEIGHTED,
            "0.5",
            "weight",
            id="missing-logprob-is-average",
        ),
        pytest.param(
            (None, "7", "3", "3.0"),
            (),
            Aggregation.FIRST_FINISH,
            "7",
            "branch b1",
            id="first-finish",
        ),
    ],
)
async def test_vote(
    answers: tuple[str | None, ...],
    logprobs: tuple[float | None, ...],
    aggregation: Aggregation,
    winner: str,
    reason_part: str,
) -> None:
    result = await vote_answers(
        branches(*answers, logprobs=logprobs), FakeEquivalence(), aggregation=aggregation
    )
    assert result.winner == winner
    assert result.aggregation is aggregation
    assert reason_part in result.reason
    assert result.winner_index is not None
    assert result.clusters[result.winner_index].answer == winner


async def test_weights_are_geometric_mean_token_probabilities() -> None:
    result = await vote_answers(
        branches("3", "3.0", "7", logprobs=(-0.1, None, math.log(0.5))),
        FakeEquivalence(),
        aggregation=Aggregation.WEIGHTED,
    )
    known = [math.exp(-0.1), 0.5]
    imputed = sum(known) / 2
    assert result.clusters[0].weight == pytest.approx(math.exp(-0.1) + imputed)
    assert result.clusters[1].weight == pytest.approx(0.5)


async def test_all_unparseable_has_no_winner() -> None:
    result = await vote_answers(branches(None, None, ""), FakeEquivalence())
    assert result.winner is None
    assert result.winner_index is None
    assert result.unparseable == ["b0", "b1", "b2"]
    assert result.reason == "no parseable answer"


async def test_incremental_clusterer_state() -> None:
    clusterer = AnswerClusterer(FakeEquivalence())
    placed = [await clusterer.add(b) for b in branches("3", None, "0.5", "3.0")]
    assert placed == [0, None, 1, 0]
    state = clusterer.state(total_branches=6)
    assert state.finished == [0, None, 1, 0]
    assert state.counts() == [2, 1]
    assert state.remaining == 2
    assert clusterer.vote().winner == "3"


def state(total: int, *finished: int | None) -> VoteState:
    return VoteState(total_branches=total, finished=list(finished))


@pytest.mark.parametrize(
    ("rule", "vote_state", "stop", "reason_part"),
    [
        pytest.param(NoEarlyStop(), state(4, 0, 0, 0), False, "disabled", id="none"),
        pytest.param(
            UnanimousWindow(window=3),
            state(8, 1, 0, 0, 0),
            True,
            "last 3 answers agree",
            id="window-fires",
        ),
        pytest.param(
            UnanimousWindow(window=3), state(8, 0, 0, 1), False, "disagree", id="window-disagrees"
        ),
        pytest.param(
            UnanimousWindow(window=3), state(8, 0, 0), False, "2 of 3", id="window-not-full"
        ),
        pytest.param(
            UnanimousWindow(window=2),
            state(8, 0, None, None),
            False,
            "disagree",
            id="window-unparseable",
        ),
        pytest.param(
            UnanimousWindow(window=2),
            state(8, None, 0, 0),
            True,
            "agree",
            id="window-ignores-older",
        ),
        # Uniform prior: P = 1 - 0.5^(v1+1) when the runner-up has no vote.
        pytest.param(
            BetaConsensus(threshold=0.95), state(8, 0, 0, 0), False, "0.9375", id="beta-3-0-not-yet"
        ),
        pytest.param(
            BetaConsensus(threshold=0.95),
            state(8, 0, 0, 0, 0),
            True,
            "= 0.968",
            id="beta-4-0-fires",
        ),
        pytest.param(
            BetaConsensus(threshold=0.95),
            state(16, 0, 1, 0, 1, 0, 0),
            False,
            "(4 vs 2",
            id="beta-4-2",
        ),
        pytest.param(
            BetaConsensus(threshold=0.8),
            state(16, 0, 1, 0, 0, 0, 2),
            True,
            "(4 vs 1",
            id="beta-4-1-low-bar",
        ),
        pytest.param(
            BetaConsensus(), state(8, None, None), False, "no parseable", id="beta-nothing"
        ),
        pytest.param(
            SafeLead(), state(5, 0, 0, 0), True, "lead of 3 exceeds the 2", id="safe-fires"
        ),
        pytest.param(
            SafeLead(), state(6, 0, 0, 0), False, "does not exceed 3", id="safe-could-tie"
        ),
        pytest.param(SafeLead(), state(4, 0, 1, 0, 1), False, "lead of 0", id="safe-tied-at-end"),
        pytest.param(
            SafeLead(), state(3, 0, None, 1), False, "lead of 0", id="safe-unparseable-no-lead"
        ),
        pytest.param(SafeLead(), state(3, None, None, None), False, "lead of 0", id="safe-nothing"),
        pytest.param(
            AnyOf(rules=(NoEarlyStop(), UnanimousWindow(window=2))),
            state(8, 0, 0),
            True,
            "agree",
            id="any-of-fires",
        ),
        pytest.param(
            AnyOf(rules=(SafeLead(), UnanimousWindow(window=2))),
            state(8, 0, 1),
            False,
            "disagree",
            id="any-of-quiet",
        ),
    ],
)
def test_early_stop_rules(
    rule: EarlyStopRule, vote_state: VoteState, stop: bool, reason_part: str
) -> None:
    decision = rule.should_stop(vote_state)
    assert decision.stop is stop
    assert reason_part in decision.reason


def test_every_request_name_maps_to_a_rule() -> None:
    assert set(EARLY_STOP_RULES) == set(EarlyStopKind)
    assert EARLY_STOP_RULES[EarlyStopKind("beta")] is BetaConsensus
    assert EARLY_STOP_RULES[EarlyStopKind("unanimous_window")] is UnanimousWindow


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (UnanimousWindow, {"window": 0}),
        (BetaConsensus, {"threshold": 1.0}),
        (BetaConsensus, {"prior_a": 0}),
    ],
    ids=["window-0", "threshold-1", "prior-0"],
)
def test_rule_parameters_are_validated(cls: type[EarlyStopRule], kwargs: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        cls(**kwargs)


def test_abstract_rule_cannot_be_built() -> None:
    with pytest.raises(TypeError):
        EarlyStopRule()  # type: ignore[abstract]


def _exact_incomplete_beta(x: Fraction, a: int, b: int) -> float:
    """I_x(a, b) = P(Binomial(a + b - 1, x) >= a) for integer a, b."""
    n = a + b - 1
    return float(sum(math.comb(n, j) * x**j * (1 - x) ** (n - j) for j in range(a, n + 1)))


@pytest.mark.parametrize(
    ("x", "a", "b", "expected"),
    [
        pytest.param(0.4, 2, 3, 0.5248, id="textbook"),
        pytest.param(0.5, 7, 7, 0.5, id="symmetric"),
        pytest.param(0.3, 1, 4, 1 - 0.7**4, id="a-is-1"),
        pytest.param(0.3, 2.7, 1, 0.3**2.7, id="b-is-1-real"),
        pytest.param(0.25, 0.5, 0.5, 2 / math.pi * math.asin(0.5), id="arcsine"),
        pytest.param(0.0, 2, 3, 0.0, id="zero"),
        pytest.param(1.0, 2, 3, 1.0, id="one"),
    ],
)
def test_beta_cdf_known_values(x: float, a: float, b: float, expected: float) -> None:
    assert beta_cdf(x, a, b) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("a", [1, 2, 5, 13, 40])
@pytest.mark.parametrize("b", [1, 3, 8, 29])
@pytest.mark.parametrize("x", [Fraction(1, 20), Fraction(1, 2), Fraction(7, 10), Fraction(19, 20)])
def test_beta_cdf_matches_binomial_identity(a: int, b: int, x: Fraction) -> None:
    assert beta_cdf(float(x), a, b) == pytest.approx(_exact_incomplete_beta(x, a, b), abs=1e-12)


def test_beta_cdf_matches_numerical_integration() -> None:
    a, b, x = 3.3, 7.9, 0.35
    grid = np.linspace(0.0, x, 200_001)
    log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    pdf = grid ** (a - 1) * (1 - grid) ** (b - 1) / math.exp(log_norm)
    assert beta_cdf(x, a, b) == pytest.approx(float(np.trapezoid(pdf, grid)), abs=1e-9)


def test_beta_sf_and_consensus_probability() -> None:
    assert beta_sf(0.5, 5, 1) == pytest.approx(1 - 0.5**5)
    assert prob_beats_runner_up(4, 0) == pytest.approx(1 - 0.5**5)
    assert prob_beats_runner_up(3, 3) == pytest.approx(0.5)
    assert prob_beats_runner_up(5, 2) == pytest.approx(_exact_incomplete_beta(Fraction(1, 2), 3, 6))


def test_beta_cdf_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        beta_cdf(0.5, 0, 1)


async def _same(a: str, b: str) -> bool:
    return a == b


@pytest.mark.parametrize(
    ("keep", "winner", "filtered"),
    [
        pytest.param(1.0, "a", [], id="all-vote-two-confident-a-outweigh-one-b"),
        pytest.param(0.34, "b", ["1"], id="top-two-only-b-outweighs-the-one-a-left"),
    ],
)
async def test_confidence_vote_keeps_the_most_confident_and_weights_them(
    keep: float, winner: str, filtered: list[str]
) -> None:
    answers = [
        BranchAnswer(branch_id="0", answer="a", finished_at=0.0, confidence=3.0),
        BranchAnswer(branch_id="1", answer="a", finished_at=1.0, confidence=3.0),
        BranchAnswer(branch_id="2", answer="b", finished_at=2.0, confidence=4.0),
    ]
    result = await vote_answers(answers, _same, aggregation=Aggregation.CONFIDENCE, keep=keep)
    assert result.winner == winner
    assert result.filtered == filtered
    majority = await vote_answers(answers, _same, aggregation=Aggregation.MAJORITY, keep=keep)
    assert majority.winner == "a"
    assert majority.filtered == []
