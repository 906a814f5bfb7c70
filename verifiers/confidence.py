"""Token confidence of a reasoning trace, as DeepConf defines it (Fu et al., arXiv 2508.15260).

* **Token confidence** of position i: ``C_i = -(1/k) * sum_j log P_i(j)`` over the k most likely
  tokens at i (the engine's top logprobs). A peaked distribution has very unlikely runners-up,
  so a high C_i means the model was sure.
* **Group confidence**: the mean of ``C_i`` over a sliding window of ``window`` tokens.
* **Lowest group confidence**: the minimum group confidence over the trace (a trace shorter than
  the window has one group: all its tokens).
* **Tail confidence**: the mean of ``C_i`` over the trace's last ``tail`` tokens.

Engines that report only the sampled token's logprob (no top-k list) cannot give ``C_i``: the
sampled token's own logprob is used instead (``ConfidenceSource.SAMPLED``). It keeps the
direction (higher is surer) but it is *not* DeepConf's measure, and a response says which one
it carries.

Online (DeepConf-online, adapted to parallel branches): the first ``warmup`` branches to finish
set a threshold, the ``100 * (1 - prune_keep)``-th percentile of their lowest group confidences
(DeepConf's "confidence percentile"); a running branch whose current group confidence falls
below it is pruned; the request stops when the confidence-weighted leader holds at least ``tau``
of the weight. With ``warmup_first`` the other branches start only once the warm-up ones have
finished (DeepConf-online's order), so the threshold exists before any of them decodes. The
final vote weights each branch by its confidence and keeps either the ``keep`` most confident
fraction (``ConfidenceVote.MOST_CONFIDENT``, DeepConf-offline's filter) or the branches whose
lowest group confidence reaches the threshold (``ConfidenceVote.THRESHOLD``, DeepConf-online's
vote). DeepConf uses one η for both roles; here they are two settings, ``prune_keep`` (the
threshold) and ``keep`` (the vote), so a low threshold percentile (what saves tokens) does not
force a narrow vote (what costs accuracy).

:class:`ConfidenceTracker` folds a stream into running statistics with O(window + tail) memory;
the batch functions compute the same numbers from a whole trace (tests, offline analysis).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from enum import StrEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from verifiers.voting import EarlyStopRule, StopDecision, VoteState

__all__ = [
    "ConfidenceConfig",
    "ConfidenceConsensus",
    "ConfidenceGate",
    "ConfidenceMeasure",
    "ConfidenceSource",
    "ConfidenceSummary",
    "ConfidenceTracker",
    "ConfidenceVote",
    "group_confidences",
    "lowest_group_confidence",
    "prune_threshold",
    "tail_confidence",
    "token_confidence",
    "vote_weight",
]


class ConfidenceSource(StrEnum):
    """What a branch's per-token confidence was computed from."""

    #: DeepConf's token confidence: minus the mean of the top-k logprobs.
    TOP_K = "top_k"
    #: Only the sampled token's logprob was available; it stands in for the confidence.
    SAMPLED = "sampled"


class ConfidenceMeasure(StrEnum):
    """Which trace-level confidence filters and weights the vote."""

    LOWEST_GROUP = "lowest_group"
    TAIL = "tail"
    MEAN = "mean"


class ConfidenceVote(StrEnum):
    """Which finished branches the confidence-weighted vote hears."""

    #: The ``keep`` most confident fraction (DeepConf-offline's top-η filter).
    MOST_CONFIDENT = "most_confident"
    #: Those whose lowest group confidence reaches the warm-up threshold (DeepConf-online's
    #: vote: the threshold is the filter); every branch before a threshold exists.
    THRESHOLD = "threshold"


class ConfidenceConfig(BaseModel):
    """DeepConf's knobs (the service's defaults; a request may override each one).

    The defaults are DeepConf's published settings (arXiv 2508.15260; its reference
    `deepconf-online.py`), not values tuned on the project's bank: the pruning threshold at the
    warm-up's 90th percentile (the reference's ``CONFIDENCE_PERCENTILE = 90``, the paper's
    DeepConf-low: ``prune_keep`` 0.1), the warm-up before the other branches (the reference's
    order), the top-90% vote (the paper's DeepConf-high filter, ``keep`` 0.9; the reference's
    online run instead votes with the threshold, ``vote: threshold``), the paper's consensus
    τ 0.95 and the lowest group confidence. DeepConf has one η for the threshold and the vote;
    the two were split after the project's first offline results (one low η saved tokens as a
    threshold but cost accuracy as a vote), so the split itself is not blind to that bank. The
    window and warm-up are the service's own (the reference: 2048 tokens, 16 of 256 traces).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: int = Field(
        256, ge=1, le=32768, description="Tokens per sliding group (DeepConf: 2048)."
    )
    tail: int = Field(256, ge=1, le=32768, description="Tokens of the tail confidence.")
    top_logprobs: int = Field(
        20, ge=1, le=20, description="Top-k logprobs asked of the engine per token (k)."
    )
    keep: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="η of the vote: the most confident fraction of finished branches that votes "
        "(0.9: DeepConf-high's top-90% filter). Only the vote: the pruning threshold is "
        "`prune_keep`'s.",
    )
    prune_keep: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="η of the pruning threshold (DeepConf's confidence percentile): the threshold "
        "is the (1 - prune_keep) quantile of the warm-up branches' lowest group confidences; "
        "0.1 (DeepConf-low) prunes a branch that falls below the 90th percentile, 0.9 "
        "(DeepConf-high) below the 10th.",
    )
    warmup: int = Field(
        3,
        ge=1,
        le=64,
        description="Branches that finish before the threshold is set (DeepConf's reference "
        "warms up on 16 of 256 traces; the service's 3 suits about 8 branches).",
    )
    tau: float = Field(
        0.95,
        gt=0.5,
        le=1.0,
        description="Stop once the weighted leader holds this share (the paper's 0.95).",
    )
    measure: ConfidenceMeasure = Field(
        ConfidenceMeasure.LOWEST_GROUP,
        description="The trace confidence that votes (DeepConf-online: lowest group).",
    )
    vote: ConfidenceVote = Field(
        ConfidenceVote.MOST_CONFIDENT,
        description="most_confident: the `keep` most confident branches vote; threshold: those "
        "whose lowest group confidence reaches the warm-up threshold (DeepConf-online).",
    )
    warmup_first: bool = Field(
        True,
        description="With early_stop 'confidence': start the branches past the warm-up only "
        "once the warm-up branches finished and set the threshold (DeepConf-online's order), "
        "so pruning reaches every later branch whatever the pool's slots. Costs latency when "
        "slots are free (offline, ~1.35-1.4x majority's decode steps with 8 branches at once; "
        "faster than majority on a 4-slot pool): false to start every branch at once.",
    )


def token_confidence(top_logprobs: Sequence[float]) -> float:
    """DeepConf's ``C_i``: minus the mean of the top-k logprobs at one position."""
    if not top_logprobs:
        raise ValueError("token confidence needs at least one logprob")
    return -math.fsum(top_logprobs) / len(top_logprobs)


def group_confidences(confidences: Sequence[float], window: int) -> np.ndarray:
    """Mean confidence of every sliding window of ``window`` tokens (one group, the whole
    trace, when it is shorter than a window; none for an empty trace)."""
    c = np.asarray(confidences, dtype=np.float64)
    if c.size == 0:
        return c
    if c.size <= window:
        return np.array([c.mean()])
    sums = np.cumsum(np.concatenate(([0.0], c)))
    groups: np.ndarray = (sums[window:] - sums[:-window]) / window
    return groups


def lowest_group_confidence(confidences: Sequence[float], window: int) -> float | None:
    groups = group_confidences(confidences, window)
    return float(groups.min()) if groups.size else None


def tail_confidence(confidences: Sequence[float], tail: int) -> float | None:
    if not confidences:
        return None
    return float(np.mean(np.asarray(confidences[-tail:], dtype=np.float64)))


def prune_threshold(lowest_groups: Sequence[float], prune_keep: float) -> float:
    """The warm-up threshold: the ``1 - prune_keep`` quantile of the warm-up branches' lowest
    group confidences (0.1: a branch is pruned once it drops below the 90th percentile)."""
    if not lowest_groups:
        raise ValueError("no warm-up branch to set a threshold from")
    return float(np.quantile(np.asarray(lowest_groups, dtype=np.float64), 1.0 - prune_keep))


def vote_weight(value: float, source: ConfidenceSource) -> float:
    """A positive vote weight from a trace confidence: DeepConf's confidence is positive
    already; a sampled-logprob stand-in (≤ 0) becomes its geometric-mean probability."""
    return value if source is ConfidenceSource.TOP_K else math.exp(value)


class ConfidenceSummary(BaseModel):
    """A trace's confidence at one moment (what a response, a record and a vote see)."""

    model_config = ConfigDict(frozen=True)

    source: ConfidenceSource
    tokens: int
    mean: float
    lowest_group: float
    tail: float
    #: The group confidence of the latest window (None until a full window has streamed).
    current_group: float | None

    def value(self, measure: ConfidenceMeasure) -> float:
        match measure:
            case ConfidenceMeasure.LOWEST_GROUP:
                return self.lowest_group
            case ConfidenceMeasure.TAIL:
                return self.tail
            case ConfidenceMeasure.MEAN:
                return self.mean

    def weight(self, measure: ConfidenceMeasure) -> float:
        return vote_weight(self.value(measure), self.source)


class ConfidenceTracker:
    """Running confidence of one streaming trace: a sum over the current window, the running
    minimum of full-window groups, a tail window and a total — O(window + tail) floats."""

    def __init__(self, *, window: int, tail: int, source: ConfidenceSource) -> None:
        self.window, self.tail, self.source = window, tail, source
        self._group: deque[float] = deque(maxlen=window)
        self._tail: deque[float] = deque(maxlen=tail)
        self._group_sum = 0.0
        self._total = 0.0
        self.tokens = 0
        self._lowest: float | None = None

    def extend(self, confidences: Iterable[float]) -> None:
        for c in confidences:
            if len(self._group) == self.window:
                self._group_sum -= self._group[0]
            self._group.append(c)
            self._group_sum += c
            self._tail.append(c)
            self._total += c
            self.tokens += 1
            if self.tokens >= self.window:
                g = self._group_sum / self.window
                self._lowest = g if self._lowest is None else min(self._lowest, g)

    @property
    def current_group(self) -> float | None:
        """The latest full window's mean confidence (None before one has streamed)."""
        return self._group_sum / self.window if self.tokens >= self.window else None

    def summary(self) -> ConfidenceSummary | None:
        if not self.tokens:
            return None
        # A trace shorter than one window: its one group is all of it.
        lowest = self._lowest if self._lowest is not None else self._total / self.tokens
        return ConfidenceSummary(
            source=self.source,
            tokens=self.tokens,
            mean=self._total / self.tokens,
            lowest_group=lowest,
            tail=math.fsum(self._tail) / len(self._tail),
            current_group=self.current_group,
        )


class ConfidenceGate:
    """DeepConf-online's pruning rule for one request: warm-up branches set the threshold,
    then a running branch whose current group confidence falls below it is pruned."""

    def __init__(self, config: ConfidenceConfig) -> None:
        self.config = config
        self.warmup: list[float] = []
        self.threshold: float | None = None

    def finished(self, summary: ConfidenceSummary | None) -> None:
        """A branch finished (not pruned): the first ``warmup`` set the threshold."""
        if summary is None or self.threshold is not None:
            return
        self.warmup.append(summary.lowest_group)
        if len(self.warmup) >= self.config.warmup:
            self.threshold = prune_threshold(self.warmup, self.config.prune_keep)

    def admits(self, summary: ConfidenceSummary) -> bool:
        """May this finished branch vote under ``ConfidenceVote.THRESHOLD``? (Every branch
        may while no threshold exists.)"""
        return self.threshold is None or summary.lowest_group >= self.threshold

    def prune(self, tracker: ConfidenceTracker) -> float | None:
        """The group confidence that condemns this running branch, or None to keep it."""
        current = tracker.current_group
        if self.threshold is None or current is None or current >= self.threshold:
            return None
        return current


class ConfidenceConsensus(EarlyStopRule):
    """Stop once ``warmup`` branches voted and the confidence-weighted leader holds ``tau`` of
    the weight (``VoteState.weights``)."""

    warmup: int = Field(3, ge=1)
    tau: float = Field(0.95, gt=0.5, le=1.0)

    def should_stop(self, state: VoteState) -> StopDecision:
        voted = sum(1 for i in state.finished if i is not None)
        if voted < self.warmup:
            return StopDecision(stop=False, reason=f"{voted} of {self.warmup} warm-up answers")
        share = state.leader_weight_share()
        verdict = ">=" if share >= self.tau else "<"
        return StopDecision(
            stop=share >= self.tau,
            reason=f"confidence-weighted leader share {share:.3f} {verdict} {self.tau}",
        )
