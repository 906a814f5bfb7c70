"""Clustering branch answers by equivalence, voting over the clusters, and early-stop rules.

Clustering is greedy in finish order: a new answer joins the first existing cluster (in order of
creation) whose representative — its earliest-finished answer — it is equivalent to, else it opens
a new cluster. Equivalence is a pluggable async callable `(representative, answer) -> bool`; in
production that is `EquivalenceChecker.equivalent`. Answers with the same normalised text join
without a call.

Votes (`Aggregation`):

* `majority` — most branches;
* `weighted` — largest sum of branch weights, a branch's weight being exp(mean token logprob),
  the geometric-mean probability of its tokens, in (0, 1]. A branch without logprobs gets the
  mean weight of those that have them (1.0 if none has), i.e. it counts as an average branch;
* `first_finish` — the cluster of the earliest-finished parseable answer;
* `confidence` — DeepConf's vote: only the ``keep`` most confident fraction of the parseable
  branches vote (or, for DeepConf-online's vote, those not ``left_out`` by the caller's
  threshold), each with its confidence as weight (`BranchAnswer.confidence`, positive; see
  `verifiers.confidence`). A branch without one gets the mean of those that have one.

Ties go to the cluster whose first answer finished earliest (equivalently, the one created
first), so a vote is deterministic. Unparseable answers (None) join no cluster: they never win,
and count only as finished branches.

Early-stop rules look at a `VoteState` (cluster of every finished branch, in finish order, and
the number of branches) and return a `StopDecision`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from enum import StrEnum
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field

from verifiers.answers import normalize_answer
from verifiers.beta import prob_beats_runner_up

__all__ = [
    "EARLY_STOP_RULES",
    "Aggregation",
    "AnswerClusterer",
    "AnyOf",
    "BetaConsensus",
    "BranchAnswer",
    "ClusterTally",
    "EarlyStopKind",
    "EarlyStopRule",
    "EquivalenceFn",
    "NoEarlyStop",
    "SafeLead",
    "StopDecision",
    "UnanimousWindow",
    "VoteResult",
    "VoteState",
    "cluster_answers",
    "most_confident",
    "tally",
    "vote",
    "vote_answers",
]

EquivalenceFn = Callable[[str, str], Awaitable[bool]]
"""(representative, candidate) -> equivalent?"""


class Aggregation(StrEnum):
    MAJORITY = "majority"
    WEIGHTED = "weighted"
    FIRST_FINISH = "first_finish"
    CONFIDENCE = "confidence"


class BranchAnswer(BaseModel):
    """One finished branch as the vote sees it."""

    model_config = ConfigDict(frozen=True)

    branch_id: str
    answer: str | None = Field(description="Extracted final answer; None if unparseable.")
    finished_at: float = Field(default=0.0, description="Finish time, seconds.")
    mean_logprob: float | None = Field(default=None, description="Mean token logprob.")
    confidence: float | None = Field(
        default=None, gt=0.0, description="Trace confidence as a positive vote weight."
    )


class ClusterTally(BaseModel):
    """One cluster of equivalent answers with its vote."""

    answer: str = Field(description="Representative: the earliest-finished member's answer.")
    branch_ids: list[str] = Field(description="Members, in finish order.")
    count: int
    weight: float = Field(description="Sum of member weights (see `Aggregation.WEIGHTED`).")
    first_finished_at: float


class VoteResult(BaseModel):
    winner: str | None = Field(description="The winning cluster's representative answer.")
    winner_index: int | None = Field(description="Index of the winner in `clusters`.")
    aggregation: Aggregation
    clusters: list[ClusterTally] = Field(description="In order of creation (first finish).")
    unparseable: list[str] = Field(default_factory=list, description="Branch ids with no answer.")
    filtered: list[str] = Field(
        default_factory=list, description="Parseable branches left out as least confident."
    )
    reason: str


class AnswerClusterer:
    """Incremental clustering: `add` answers as branches finish, `vote` at any time."""

    def __init__(self, equivalent: EquivalenceFn) -> None:
        self._equivalent = equivalent
        self._clusters: list[list[BranchAnswer]] = []
        self._keys: list[str] = []
        self._finished: list[int | None] = []
        self._unparseable: list[str] = []
        self._weights: list[float] = []

    async def add(self, answer: BranchAnswer) -> int | None:
        """Place a finished branch; returns its cluster index (None: unparseable)."""
        self._weights.append(answer.confidence if answer.confidence is not None else 1.0)
        if answer.answer is None or not answer.answer.strip():
            self._unparseable.append(answer.branch_id)
            self._finished.append(None)
            return None
        key = normalize_answer(answer.answer)
        index = await self._find_cluster(answer.answer, key)
        if index is None:
            index = len(self._clusters)
            self._clusters.append([answer])
            self._keys.append(key)
        else:
            self._clusters[index].append(answer)
        self._finished.append(index)
        return index

    async def _find_cluster(self, answer: str, key: str) -> int | None:
        if key in self._keys:
            return self._keys.index(key)
        for index, members in enumerate(self._clusters):
            representative = members[0].answer
            assert representative is not None
            if await self._equivalent(representative, answer):
                return index
        return None

    def tallies(self, aggregation: Aggregation = Aggregation.MAJORITY) -> list[ClusterTally]:
        return tally(self._clusters, aggregation=aggregation)

    def state(self, total_branches: int) -> VoteState:
        return VoteState(
            total_branches=total_branches,
            finished=list(self._finished),
            weights=list(self._weights),
        )

    def vote(
        self,
        aggregation: Aggregation = Aggregation.MAJORITY,
        *,
        keep: float = 1.0,
        left_out: Collection[str] = (),
    ) -> VoteResult:
        """The vote; with `confidence` only the ``keep`` most confident fraction of the
        branches not ``left_out`` votes (``left_out`` is ignored when it would silence every
        parseable answer)."""
        if aggregation is not Aggregation.CONFIDENCE or (keep >= 1.0 and not left_out):
            return vote(
                self.tallies(aggregation), aggregation=aggregation, unparseable=self._unparseable
            )
        heard = [[b for b in c if b.branch_id not in left_out] for c in self._clusters]
        silenced = [b.branch_id for c in self._clusters for b in c if b.branch_id in left_out]
        if not any(heard):
            heard, silenced = self._clusters, []
        kept, dropped = most_confident([c for c in heard if c], keep)
        dropped = silenced + dropped
        return vote(
            tally(kept, aggregation=aggregation),
            aggregation=aggregation,
            unparseable=self._unparseable,
            filtered=dropped,
        )


def most_confident(
    clusters: Sequence[Sequence[BranchAnswer]], keep: float
) -> tuple[list[list[BranchAnswer]], list[str]]:
    """The clusters with only their members among the ``ceil(keep * n)`` most confident
    parseable branches (empty clusters dropped, order kept), and the ids left out. Equal
    confidences keep the earlier finisher."""
    members = [b for c in clusters for b in c]
    n_keep = max(1, math.ceil(keep * len(members)))
    ranked = sorted(
        members,
        key=lambda b: (-(b.confidence if b.confidence is not None else 0.0), b.finished_at),
    )
    kept_ids = {b.branch_id for b in ranked[:n_keep]}
    kept = [[b for b in c if b.branch_id in kept_ids] for c in clusters]
    dropped = [b.branch_id for b in members if b.branch_id not in kept_ids]
    return [c for c in kept if c], dropped


def _weights(
    clusters: Sequence[Sequence[BranchAnswer]], aggregation: Aggregation
) -> list[list[float]]:
    def own(b: BranchAnswer) -> float | None:
        if aggregation is Aggregation.CONFIDENCE:
            return b.confidence
        return math.exp(b.mean_logprob) if b.mean_logprob is not None else None

    known = [w for c in clusters for b in c if (w := own(b)) is not None]
    fallback = sum(known) / len(known) if known else 1.0
    return [[w if (w := own(b)) is not None else fallback for b in c] for c in clusters]


def tally(
    clusters: Sequence[Sequence[BranchAnswer]], *, aggregation: Aggregation = Aggregation.MAJORITY
) -> list[ClusterTally]:
    """Counts and weights of clusters given as lists of members in finish order (weights are
    confidences for `confidence`, exp(mean logprob) otherwise)."""
    out = []
    for members, weights in zip(clusters, _weights(clusters, aggregation), strict=True):
        first = members[0]
        assert first.answer is not None
        out.append(
            ClusterTally(
                answer=first.answer,
                branch_ids=[b.branch_id for b in members],
                count=len(members),
                weight=sum(weights),
                first_finished_at=first.finished_at,
            )
        )
    return out


_SCORES: Mapping[Aggregation, Callable[[ClusterTally], float]] = MappingProxyType(
    {
        Aggregation.MAJORITY: lambda c: float(c.count),
        Aggregation.WEIGHTED: lambda c: c.weight,
        Aggregation.FIRST_FINISH: lambda c: -c.first_finished_at,
        Aggregation.CONFIDENCE: lambda c: c.weight,
    }
)


def vote(
    clusters: Sequence[ClusterTally],
    *,
    aggregation: Aggregation = Aggregation.MAJORITY,
    unparseable: Sequence[str] = (),
    filtered: Sequence[str] = (),
) -> VoteResult:
    """Pick the winning cluster; ties go to the earliest-created cluster."""
    clusters = list(clusters)
    if not clusters:
        return VoteResult(
            winner=None,
            winner_index=None,
            aggregation=aggregation,
            clusters=[],
            unparseable=list(unparseable),
            filtered=list(filtered),
            reason="no parseable answer",
        )
    score = _SCORES[aggregation]
    scores = [score(c) for c in clusters]
    best = max(scores)
    tied = [i for i, s in enumerate(scores) if s == best]
    # Clusters are created in finish order, so the lowest index finished first.
    winner = min(tied, key=lambda i: (clusters[i].first_finished_at, i))
    leader = clusters[winner]
    total_count, total_weight = sum(c.count for c in clusters), sum(c.weight for c in clusters)
    detail = {
        Aggregation.MAJORITY: f"{leader.count} of {total_count} parseable votes",
        Aggregation.WEIGHTED: f"weight {leader.weight:.3f} of {total_weight:.3f}",
        Aggregation.FIRST_FINISH: f"first parseable answer (branch {leader.branch_ids[0]})",
        Aggregation.CONFIDENCE: f"confidence {leader.weight:.3f} of {total_weight:.3f}",
    }[aggregation]
    reason = f"{aggregation.value}: {detail}"
    if filtered:
        reason += f" ({len(filtered)} least confident left out)"
    if len(tied) > 1:
        reason += f"; tie between {len(tied)} clusters broken by earliest finish"
    return VoteResult(
        winner=leader.answer,
        winner_index=winner,
        aggregation=aggregation,
        clusters=clusters,
        unparseable=list(unparseable),
        filtered=list(filtered),
        reason=reason,
    )


async def cluster_answers(
    answers: Sequence[BranchAnswer], equivalent: EquivalenceFn
) -> list[ClusterTally]:
    """Cluster a batch of finished branches (processed in finish order, input order on ties)."""
    clusterer = AnswerClusterer(equivalent)
    for answer in sorted(answers, key=lambda a: a.finished_at):  # sort is stable
        await clusterer.add(answer)
    return clusterer.tallies()


async def vote_answers(
    answers: Sequence[BranchAnswer],
    equivalent: EquivalenceFn,
    *,
    aggregation: Aggregation = Aggregation.MAJORITY,
    keep: float = 1.0,
) -> VoteResult:
    """Cluster and vote in one call (``keep``: see `AnswerClusterer.vote`)."""
    clusterer = AnswerClusterer(equivalent)
    for answer in sorted(answers, key=lambda a: a.finished_at):
        await clusterer.add(answer)
    return clusterer.vote(aggregation, keep=keep)


# -- early stopping ---------------------------------------------------------------------------


class VoteState(BaseModel):
    """What an early-stop rule sees: the cluster of every finished branch, in finish order."""

    total_branches: int = Field(ge=1)
    finished: list[int | None] = Field(
        description="Cluster index of each finished branch; None: it had no answer."
    )
    weights: list[float] = Field(
        default_factory=list,
        description="Vote weight of each finished branch (its confidence; 1.0 without one).",
    )

    def leader_weight_share(self) -> float:
        """The heaviest cluster's share of the weight of the parseable answers (0 if none)."""
        by_cluster: dict[int, float] = {}
        weights = self.weights or [1.0] * len(self.finished)
        for i, w in zip(self.finished, weights, strict=True):
            if i is not None:
                by_cluster[i] = by_cluster.get(i, 0.0) + w
        total = sum(by_cluster.values())
        return max(by_cluster.values()) / total if total > 0 else 0.0

    @property
    def remaining(self) -> int:
        return max(self.total_branches - len(self.finished), 0)

    def counts(self) -> list[int]:
        """Votes per cluster index."""
        size = max((i for i in self.finished if i is not None), default=-1) + 1
        counts = [0] * size
        for i in self.finished:
            if i is not None:
                counts[i] += 1
        return counts

    def top_two(self) -> tuple[int, int]:
        """(leader's votes, runner-up's votes); 0 where there is no such cluster."""
        ranked = [*sorted(self.counts(), reverse=True), 0, 0]
        return ranked[0], ranked[1]


class StopDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    stop: bool
    reason: str


class EarlyStopRule(BaseModel, ABC):
    """Decides from the answers so far whether the remaining branches can be aborted."""

    model_config = ConfigDict(frozen=True)

    @abstractmethod
    def should_stop(self, state: VoteState) -> StopDecision: ...


class NoEarlyStop(EarlyStopRule):
    """Never stops early: every branch runs to its end."""

    def should_stop(self, state: VoteState) -> StopDecision:
        return StopDecision(stop=False, reason="early stop disabled")


class UnanimousWindow(EarlyStopRule):
    """ESC (Li et al., 2024): stop once the last `window` finished answers are all equivalent."""

    window: int = Field(default=3, ge=1, description="How many consecutive agreeing answers stop.")

    def should_stop(self, state: VoteState) -> StopDecision:
        if len(state.finished) < self.window:
            return StopDecision(
                stop=False, reason=f"{len(state.finished)} of {self.window} answers in window"
            )
        last = state.finished[-self.window :]
        if last[0] is not None and all(i == last[0] for i in last):
            return StopDecision(
                stop=True, reason=f"last {self.window} answers agree (cluster {last[0]})"
            )
        return StopDecision(stop=False, reason=f"last {self.window} answers disagree")


class BetaConsensus(EarlyStopRule):
    """Adaptive-Consistency (Aggarwal et al., 2023), Beta stopping criterion.

    Stop when P(leader's share > runner-up's share) > `threshold`, the shares of the two leading
    answers having the posterior Beta(v1 + prior_a, v2 + prior_b) (uniform prior by default).
    """

    threshold: float = Field(default=0.95, gt=0.0, lt=1.0)
    prior_a: float = Field(default=1.0, gt=0.0)
    prior_b: float = Field(default=1.0, gt=0.0)

    def should_stop(self, state: VoteState) -> StopDecision:
        top, runner_up = state.top_two()
        if top == 0:
            return StopDecision(stop=False, reason="no parseable answer yet")
        p = prob_beats_runner_up(top, runner_up, prior_a=self.prior_a, prior_b=self.prior_b)
        verdict = ">" if p > self.threshold else "<="
        return StopDecision(
            stop=p > self.threshold,
            reason=f"P(leader beats runner-up) = {p:.4f} {verdict} {self.threshold} "
            f"({top} vs {runner_up} votes)",
        )


class SafeLead(EarlyStopRule):
    """Stop when the majority leader cannot be caught: its lead exceeds the unfinished branches.

    Exact for `majority` votes only (weights can still overturn a count lead).
    """

    def should_stop(self, state: VoteState) -> StopDecision:
        top, runner_up = state.top_two()
        lead, remaining = top - runner_up, state.remaining
        if top > 0 and lead > remaining:
            return StopDecision(
                stop=True, reason=f"lead of {lead} exceeds the {remaining} unfinished branches"
            )
        return StopDecision(
            stop=False, reason=f"lead of {lead} does not exceed {remaining} unfinished branches"
        )


class AnyOf(EarlyStopRule):
    """Stops as soon as any of its rules does (the first firing rule gives the reason)."""

    rules: tuple[EarlyStopRule, ...]

    def should_stop(self, state: VoteState) -> StopDecision:
        decisions = [rule.should_stop(state) for rule in self.rules]
        for decision in decisions:
            if decision.stop:
                return decision
        return StopDecision(stop=False, reason="; ".join(d.reason for d in decisions))


class EarlyStopKind(StrEnum):
    NONE = "none"
    UNANIMOUS_WINDOW = "unanimous_window"
    BETA = "beta"
    SAFE_LEAD = "safe_lead"


EARLY_STOP_RULES: Mapping[EarlyStopKind, type[EarlyStopRule]] = MappingProxyType(
    {
        EarlyStopKind.NONE: NoEarlyStop,
        EarlyStopKind.UNANIMOUS_WINDOW: UnanimousWindow,
        EarlyStopKind.BETA: BetaConsensus,
        EarlyStopKind.SAFE_LEAD: SafeLead,
    }
)
"""Request-level names → rule classes; build with `EARLY_STOP_RULES[kind](**params)`."""
