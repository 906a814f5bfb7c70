"""The settings-selection protocol: folds, the selection rule and the pooled held-out rows."""

from __future__ import annotations

import pytest

from evals.confidence_replay import Outcome
from evals.confidence_selection import (
    GRID,
    FoldResult,
    GridRun,
    choose,
    cross_validate,
    folds,
    grid_configs,
    held_out_rows,
    vote_key,
)
from verifiers.confidence import ConfidenceConfig, ConfidenceVote

IDS = ["p0", "p1", "p2", "p3"]


def _outcomes(correct: list[bool], tokens: int) -> dict[str, Outcome]:
    return {i: Outcome(correct=c, tokens=tokens) for i, c in zip(IDS, correct, strict=True)}


def _run(*points: tuple[list[bool], int, list[bool]]) -> GridRun:
    """majority: right on p0 and p2, 100 tokens a problem; each point: its early stop's
    grades and tokens, its weighted vote's grades."""
    configs = [ConfidenceConfig(warmup=k + 1) for k in range(len(points))]
    return GridRun(
        configs=configs,
        majority=_outcomes([True, False, True, False], 100),
        stop=[_outcomes(p[0], p[1]) for p in points],
        weighted=[_outcomes(p[2], 100) for p in points],
    )


MAJ = [True, False, True, False]


def test_folds_swap_the_even_and_odd_halves_of_the_sorted_ids() -> None:
    assert folds(["p3", "p1", "p2", "p0"]) == [
        (["p0", "p2"], ["p1", "p3"]),
        (["p1", "p3"], ["p0", "p2"]),
    ]


@pytest.mark.parametrize(
    ("points", "chosen"),
    [
        pytest.param([(MAJ, 90, MAJ), (MAJ, 50, MAJ)], 1, id="fewest-tokens"),
        pytest.param(
            [(MAJ, 90, MAJ), ([False, False, True, False], 50, MAJ)], 0, id="stop-loses-accuracy"
        ),
        pytest.param(
            [(MAJ, 90, MAJ), (MAJ, 50, [False, False, True, False])], 0, id="vote-loses-accuracy"
        ),
        pytest.param([(MAJ, 50, MAJ), (MAJ, 50, MAJ)], 0, id="tie-earlier-point"),
        pytest.param([([False] * 4, 50, MAJ)], None, id="nothing-fits"),
    ],
)
def test_the_rule_takes_the_fewest_tokens_that_keep_both_accuracies(
    points: list[tuple[list[bool], int, list[bool]]], chosen: int | None
) -> None:
    assert choose(_run(*points), IDS, slack_pt=1.0) == chosen


def test_each_fold_selects_on_its_half_and_the_pool_reports_every_problem_once() -> None:
    # Point 1 saves tokens but is wrong on p2 (an even problem): fold 1 (selects on even)
    # rejects it, fold 2 (selects on odd) takes it, and its p2 miss shows in the held-out pool.
    run = _run((MAJ, 90, MAJ), ([True, False, False, False], 40, MAJ))
    results = cross_validate(run, slack_pt=1.0)
    assert [r.chosen for r in results] == [0, 1]
    base, weighted, stop = held_out_rows(run, results)
    assert (base.problems, stop.problems) == (4, 4)
    assert stop.tokens == 90 * 2 + 40 * 2  # odd problems by point 0, even ones by point 1
    assert (base.accuracy, stop.accuracy, weighted.accuracy) == (0.5, 0.25, 0.5)


def test_a_fold_that_chose_nothing_reports_the_first_grid_point() -> None:
    run = _run((MAJ, 90, MAJ), (MAJ, 40, MAJ))
    results = [
        FoldResult(["p0", "p2"], ["p1", "p3"], None),
        FoldResult(["p1", "p3"], ["p0", "p2"], 1),
    ]
    assert held_out_rows(run, results)[2].tokens == 90 * 2 + 40 * 2


def test_the_grid_lists_the_defaults_first_and_varies_prune_keep() -> None:
    configs = grid_configs(ConfidenceConfig(window=32, tail=32))
    assert configs[0] == ConfidenceConfig(window=32, tail=32)
    assert {k: getattr(configs[0], k) for k in GRID} == {k: v[0] for k, v in GRID.items()}
    assert {c.prune_keep for c in configs} == {0.1, 0.5, 0.9}
    assert {c.keep for c in configs} == {0.1, 0.5, 0.9}
    assert len(configs) == 162  # the run stays within about ten minutes


def test_the_weighted_vote_is_shared_by_points_that_differ_only_in_pruning() -> None:
    base = ConfidenceConfig()
    pruning = base.model_copy(update={"prune_keep": 0.9, "tau": 0.8, "warmup": 2})
    assert vote_key(pruning) == vote_key(base)
    assert vote_key(base.model_copy(update={"keep": 0.5})) != vote_key(base)
    # The threshold vote hears what the threshold admits: prune_keep matters, keep does not.
    threshold = base.model_copy(update={"vote": ConfidenceVote.THRESHOLD})
    assert vote_key(threshold.model_copy(update={"prune_keep": 0.9})) != vote_key(threshold)
    assert vote_key(threshold.model_copy(update={"keep": 0.1})) == vote_key(threshold)


def test_a_seeded_split_is_a_fixed_shuffle_covering_every_problem_once() -> None:
    ids = [f"p{i:02d}" for i in range(20)]
    (sel, held), (sel2, held2) = folds(ids, seed=3)
    assert (sel, held) == (held2, sel2)
    assert sorted(sel + held) == ids
    assert folds(ids, seed=3) == folds(list(reversed(ids)), seed=3)
    assert sel != ids[0::2]
