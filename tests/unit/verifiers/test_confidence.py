"""DeepConf's confidence measures, hand-computed, and the streaming tracker equal to the batch."""

from __future__ import annotations

import math

import pytest

from verifiers.confidence import (
    ConfidenceConfig,
    ConfidenceConsensus,
    ConfidenceGate,
    ConfidenceMeasure,
    ConfidenceSource,
    ConfidenceTracker,
    ConfidenceVote,
    group_confidences,
    lowest_group_confidence,
    prune_threshold,
    tail_confidence,
    token_confidence,
    vote_weight,
)
from verifiers.voting import VoteState


def test_token_confidence_is_minus_the_mean_of_the_top_logprobs() -> None:
    assert token_confidence([-0.1, -1.0, -2.0, -2.9]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="at least one"):
        token_confidence([])


@pytest.mark.parametrize(
    ("trace", "window", "groups", "lowest"),
    [
        pytest.param([1, 2, 3, 4, 5], 2, [1.5, 2.5, 3.5, 4.5], 1.5, id="sliding-pairs"),
        pytest.param([1, 2, 3, 4, 5], 3, [2.0, 3.0, 4.0], 2.0, id="window-3"),
        pytest.param([4, 1, 1, 4], 2, [2.5, 1.0, 2.5], 1.0, id="dip-in-the-middle"),
        pytest.param([2, 4], 5, [3.0], 3.0, id="shorter-than-a-window-is-one-group"),
        pytest.param([], 2, [], None, id="empty"),
    ],
)
def test_group_and_lowest_group_confidence(
    trace: list[float], window: int, groups: list[float], lowest: float | None
) -> None:
    assert group_confidences(trace, window).tolist() == pytest.approx(groups)
    assert lowest_group_confidence(trace, window) == (
        pytest.approx(lowest) if lowest is not None else None
    )


def test_tail_confidence_is_the_mean_of_the_last_tokens() -> None:
    assert tail_confidence([1, 2, 3, 4, 5], 2) == pytest.approx(4.5)
    assert tail_confidence([1, 2], 10) == pytest.approx(1.5)
    assert tail_confidence([], 3) is None


def test_the_streaming_tracker_equals_the_batch_measures() -> None:
    tracker = ConfidenceTracker(window=2, tail=3, source=ConfidenceSource.TOP_K)
    tracker.extend([4.0])
    assert tracker.current_group is None  # no full window yet
    tracker.extend([1.0])
    assert tracker.current_group == pytest.approx(2.5)
    tracker.extend([1.0, 4.0, 6.0])
    s = tracker.summary()
    assert s is not None
    assert s.current_group == pytest.approx(5.0)
    assert s.lowest_group == pytest.approx(1.0) == lowest_group_confidence([4, 1, 1, 4, 6], 2)
    assert s.tail == pytest.approx(11 / 3) == tail_confidence([4, 1, 1, 4, 6], 3)
    assert s.mean == pytest.approx(3.2)
    assert s.tokens == 5


def test_a_trace_shorter_than_the_window_has_its_mean_as_lowest_group() -> None:
    tracker = ConfidenceTracker(window=8, tail=8, source=ConfidenceSource.TOP_K)
    tracker.extend([2.0, 4.0])
    s = tracker.summary()
    assert s is not None
    assert s.lowest_group == pytest.approx(3.0)
    assert s.current_group is None
    assert ConfidenceTracker(window=2, tail=2, source=ConfidenceSource.TOP_K).summary() is None


def test_the_threshold_is_the_one_minus_keep_quantile_of_the_warmup() -> None:
    assert prune_threshold([1, 2, 3, 4, 5], 0.9) == pytest.approx(1.4)
    assert prune_threshold([1, 2, 3, 4, 5], 0.5) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="warm-up"):
        prune_threshold([], 0.9)


def _tracker(values: list[float], window: int = 2) -> ConfidenceTracker:
    t = ConfidenceTracker(window=window, tail=window, source=ConfidenceSource.TOP_K)
    t.extend(values)
    return t


def test_the_gate_prunes_only_after_warmup_and_below_the_threshold() -> None:
    gate = ConfidenceGate(ConfidenceConfig(warmup=2, prune_keep=0.5, window=2))
    low = _tracker([2.0, 3.0])  # current group 2.5
    assert gate.prune(low) is None  # no threshold before the warm-up
    gate.finished(_tracker([2.0, 2.0]).summary())
    assert gate.threshold is None
    gate.finished(_tracker([4.0, 4.0]).summary())
    assert gate.threshold == pytest.approx(3.0)
    assert gate.prune(low) == pytest.approx(2.5)
    assert gate.prune(_tracker([3.0, 4.0])) is None
    assert gate.prune(_tracker([1.0])) is None  # no full window yet
    gate.finished(_tracker([0.0, 0.0]).summary())  # later finishers do not move it
    assert gate.threshold == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("prune_keep", "keep", "threshold"),
    [
        pytest.param(0.5, 0.1, 3.0, id="median-whatever-the-vote-keeps"),
        pytest.param(0.5, 1.0, 3.0, id="median-with-every-branch-voting"),
        pytest.param(0.1, 0.5, 3.8, id="90th-percentile"),
        pytest.param(1.0, 0.5, 2.0, id="lowest"),
    ],
)
def test_prune_keep_alone_sets_the_threshold(
    prune_keep: float, keep: float, threshold: float
) -> None:
    gate = ConfidenceGate(ConfidenceConfig(warmup=2, prune_keep=prune_keep, keep=keep, window=2))
    gate.finished(_tracker([2.0, 2.0]).summary())
    gate.finished(_tracker([4.0, 4.0]).summary())
    assert gate.threshold == pytest.approx(threshold)


def test_the_defaults_are_deepconf_online() -> None:
    """DeepConf's published online settings: the 90th-percentile threshold (DeepConf-low), the
    top-90% vote (DeepConf-high), warm-up first, τ 0.95, lowest group confidence."""
    c = ConfidenceConfig()
    assert (c.prune_keep, c.keep, c.warmup_first, c.tau) == (0.1, 0.9, True, 0.95)
    assert (c.measure, c.vote, c.warmup) == (
        ConfidenceMeasure.LOWEST_GROUP,
        ConfidenceVote.MOST_CONFIDENT,
        3,
    )


@pytest.mark.parametrize(
    ("warmup", "tau", "stop"),
    [
        pytest.param(3, 0.75, True, id="share-0.8-passes-0.75"),
        pytest.param(3, 0.9, False, id="share-0.8-short-of-0.9"),
        pytest.param(4, 0.5 + 1e-9, False, id="before-warmup"),
    ],
)
def test_consensus_stops_on_the_weighted_leader_share(warmup: int, tau: float, stop: bool) -> None:
    state = VoteState(total_branches=6, finished=[0, 1, None, 0], weights=[2.0, 1.0, 9.0, 2.0])
    assert state.leader_weight_share() == pytest.approx(0.8)
    assert ConfidenceConsensus(warmup=warmup, tau=tau).should_stop(state).stop is stop


def test_vote_weights_are_positive_for_both_sources() -> None:
    assert vote_weight(3.5, ConfidenceSource.TOP_K) == 3.5
    assert vote_weight(-0.5, ConfidenceSource.SAMPLED) == pytest.approx(math.exp(-0.5))
    s = _tracker([1.0, 3.0, 2.0]).summary()
    assert s is not None
    assert s.value(ConfidenceMeasure.LOWEST_GROUP) == pytest.approx(2.0)
    assert s.value(ConfidenceMeasure.TAIL) == pytest.approx(2.5)
    assert s.value(ConfidenceMeasure.MEAN) == pytest.approx(2.0)
