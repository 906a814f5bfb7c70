import math

import numpy as np
import pytest

from evals.metrics import (
    ProblemOutcome,
    bootstrap_interval,
    compare_runs,
    default_k_values,
    majority_correct,
    pass_at_k,
    summarize,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 3, 1, 0.3),  # pass@1 is the plain fraction
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2)
        (100, 1, 10, 0.1),  # 1 - C(99,10)/C(100,10) = 1 - 90/100
        (5, 0, 3, 0.0),
        (5, 5, 5, 1.0),
        (5, 3, 3, 1.0),  # n - c < k: every 3-subset holds a correct sample
        (200, 13, 100, 1 - math.comb(187, 100) / math.comb(200, 100)),
    ],
    ids=["k1", "k5", "n4", "n100", "none", "all", "forced", "large"],
)
def test_pass_at_k_matches_combinatorial_definition(
    n: int, c: int, k: int, expected: float
) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4)], ids=str)
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    ("successes", "total", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score).
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
    ids=["81/263", "15/148", "0/20", "1/29"],
)
def test_wilson_interval_matches_published_values(
    successes: int, total: int, low: float, high: float
) -> None:
    got = wilson_interval(successes, total)
    assert got == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("total", [1, 3, 7, 20, 29, 500], ids=str)
def test_wilson_interval_contains_the_proportion_at_the_edges(total: int) -> None:
    low, _ = wilson_interval(0, total)
    _, high = wilson_interval(total, total)
    assert (low, high) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_brackets_the_mean() -> None:
    values = np.linspace(0, 1, 50) ** 2
    first = bootstrap_interval(values, seed=3)
    assert first == bootstrap_interval(values, seed=3)
    assert first != bootstrap_interval(values, seed=4)
    assert first[0] < values.mean() < first[1]
    # The interval width is about 2 * 1.96 standard errors of the mean.
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert first[1] - first[0] == pytest.approx(2 * 1.96 * se, rel=0.15)


@pytest.mark.parametrize(
    ("correct", "clusters", "k", "expected"),
    [
        ((True, False, False), (0, 1, 1), 3, False),  # wrong answer holds the majority
        ((True, False, False), (0, 1, 2), 3, True),  # three-way tie: the first cluster wins
        ((False, True, True), (1, 0, 0), 1, False),  # only the first sample votes at k=1
        ((False, True, True), (1, 0, 0), 3, True),
        ((False, False, True), (None, None, 0), 3, True),  # unanswered samples do not vote
        ((False, False), (None, None), 2, False),
    ],
    ids=["wrong-majority", "tie-first", "k1", "k3", "abstain", "no-answers"],
)
def test_majority_vote(correct, clusters, k: int, expected: bool) -> None:
    assert majority_correct(correct, clusters, k) is expected


def _outcome(pid: str, correct: list[bool], *, level: int | None = None, **kw) -> ProblemOutcome:
    clusters = kw.pop("clusters", [0 if ok else 1 for ok in correct])
    return ProblemOutcome(
        problem_id=pid, level=level, correct=tuple(correct), clusters=tuple(clusters), **kw
    )


def test_summarize_hand_computed_run() -> None:
    outcomes = [
        _outcome("a", [True, True, False, False], level=1, latency_s=(1, 2, 3, 4)),
        _outcome(
            "b",
            [False, False, False, True],
            level=2,
            clusters=[1, 2, 3, 0],
            latency_s=(5, 6, 7, 8),
        ),
        _outcome("c", [False] * 4, level=2, latency_s=(9, 10, 11, 12)),
    ]
    report = summarize(outcomes, seed=0)
    assert report.avg.value == pytest.approx((0.5 + 0.25 + 0.0) / 3)
    assert report.avg.method == "bootstrap"
    assert sorted(report.maj_at) == [1, 2, 4]
    # maj@4: a is a 2-2 tie won by the first (correct) cluster; b's answers all differ and the
    # first one is wrong; c is wrong.
    assert report.maj_at[4].value == pytest.approx(1 / 3)
    assert report.maj_at[4].method == "wilson"
    # pass@2: a = 1 - C(2,2)/C(4,2) = 5/6; b = 1 - C(3,2)/C(4,2) = 1/2; c = 0.
    assert report.pass_at[2].value == pytest.approx((5 / 6 + 1 / 2) / 3)
    assert report.pass_at[4].value == pytest.approx(2 / 3)
    assert report.by_level["Level 1"].value == 0.5
    assert report.by_level["Level 2"].count == 2
    assert report.latency_p50_s == pytest.approx(6.5)
    assert report.latency_p95_s == pytest.approx(11.45)
    assert report.mean_total_tokens is None


def test_binary_accuracy_uses_wilson_and_tokens_are_averaged() -> None:
    outcomes = [
        _outcome(str(i), [i < 8], thinking_tokens=(100 * i,), answer_tokens=(10,))
        for i in range(10)
    ]
    report = summarize(outcomes)
    assert report.avg.method == "wilson"
    assert (report.avg.low, report.avg.high) == pytest.approx(wilson_interval(8, 10))
    assert report.mean_thinking_tokens == pytest.approx(450.0)
    assert report.mean_total_tokens == pytest.approx(460.0)


def test_outcome_rejects_ragged_samples() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        ProblemOutcome(problem_id="x", correct=(True, False), clusters=(0,))


@pytest.mark.parametrize(("n", "ks"), [(1, (1,)), (6, (1, 2, 4, 6)), (8, (1, 2, 4, 8))], ids=str)
def test_default_k_values(n: int, ks: tuple[int, ...]) -> None:
    assert default_k_values(n) == ks


def test_paired_comparison_counts_discordant_pairs() -> None:
    a = [_outcome(str(i), [ok]) for i, ok in enumerate([1, 1, 1, 1, 1, 1, 0, 0, 1, 0])]
    b = [_outcome(str(i), [ok]) for i, ok in enumerate([0, 0, 0, 0, 1, 1, 0, 0, 1, 1])]
    b.append(_outcome("only-in-b", [True]))
    result = compare_runs(a, b, seed=1)
    assert result.n_problems == 10
    assert (result.a_better, result.b_better, result.ties) == (4, 1, 5)
    assert result.difference.value == pytest.approx(0.3)
    assert result.difference.low < 0.3 < result.difference.high
    # Exact McNemar: 2 * P(Binomial(5, 1/2) <= 1) = 2 * 6/32.
    assert result.mcnemar_p == pytest.approx(12 / 32)


def test_paired_comparison_of_fractional_scores_has_no_mcnemar() -> None:
    a = [_outcome("x", [True, False]), _outcome("y", [True, True])]
    b = [_outcome("x", [False, False]), _outcome("y", [True, False])]
    result = compare_runs(a, b)
    assert result.difference.value == pytest.approx(0.5)
    assert result.mcnemar_p is None


def test_paired_comparison_needs_shared_problems() -> None:
    with pytest.raises(ValueError, match="share no problems"):
        compare_runs([_outcome("a", [True])], [_outcome("b", [True])])
