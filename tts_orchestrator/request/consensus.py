"""Vote over a request's branches as they finish, and decide when the rest can be aborted.

Wires the pure pieces of `verifiers` (answer extraction, equivalence clustering, votes and
early-stop rules) to one request. Equivalence runs in the process pool of an
`EquivalenceChecker`, so sympy never blocks the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from tts_orchestrator.protocol import TtsOptions
from verifiers.answers import extract_final_answer
from verifiers.confidence import ConfidenceConfig, ConfidenceConsensus, ConfidenceVote
from verifiers.voting import (
    Aggregation,
    AnswerClusterer,
    AnyOf,
    BetaConsensus,
    BranchAnswer,
    EarlyStopRule,
    EquivalenceFn,
    NoEarlyStop,
    SafeLead,
    StopDecision,
    UnanimousWindow,
    VoteResult,
    VoteState,
)


class FirstAnswer(EarlyStopRule):
    """`first_finish` aggregation: the first parseable answer decides."""

    def should_stop(self, state: VoteState) -> StopDecision:
        if any(i is not None for i in state.finished):
            return StopDecision(stop=True, reason="first parseable answer decides (first_finish)")
        return StopDecision(stop=False, reason="no parseable answer yet")


def build_rule(
    tts: TtsOptions, *, safe_lead: bool = True, confidence: ConfidenceConfig | None = None
) -> EarlyStopRule:
    """The request's early-stop rule. A majority vote also stops once it is decided (SafeLead):
    the unfinished branches cannot change its winner, so running them only costs time.
    ``safe_lead=False`` hears every branch out (a probe whose agreement is the question)."""
    aggregation = Aggregation(tts.aggregation)
    if aggregation is Aggregation.FIRST_FINISH:
        return FirstAnswer()
    chosen: EarlyStopRule
    match tts.early_stop:
        case "unanimous_window":
            chosen = UnanimousWindow(window=tts.early_stop_window)
        case "beta":
            chosen = BetaConsensus(threshold=tts.early_stop_threshold)
        case "confidence":
            c = confidence or ConfidenceConfig()
            chosen = ConfidenceConsensus(warmup=c.warmup, tau=c.tau)
        case _:
            chosen = NoEarlyStop()
    if aggregation is Aggregation.MAJORITY and safe_lead:
        return AnyOf(rules=(chosen, SafeLead()))
    return chosen


def branch_answer_text(content: str, reasoning: str) -> str | None:
    """The branch's final answer: from the answer part, else (unclosed thinking) from the end
    of its reasoning."""
    return extract_final_answer(content) or (
        extract_final_answer(reasoning) if not content else None
    )


class Consensus:
    """Incremental vote of one request. ``left_out`` names the finished branches a confidence
    vote does not hear (DeepConf-online's threshold vote). The early-stop rules still see every
    finished branch: DeepConf's consensus counts all the traces generated, and only the final
    vote is filtered (as in its reference online run)."""

    def __init__(
        self,
        tts: TtsOptions,
        *,
        n_branches: int,
        equivalent: EquivalenceFn,
        safe_lead: bool = True,
        confidence: ConfidenceConfig | None = None,
        left_out: Callable[[], Collection[int]] | None = None,
    ) -> None:
        self.aggregation = Aggregation(tts.aggregation)
        self.rule = build_rule(tts, safe_lead=safe_lead, confidence=confidence)
        top_share = confidence is not None and confidence.vote is ConfidenceVote.MOST_CONFIDENT
        self.keep = confidence.keep if confidence is not None and top_share else 1.0
        self._left_out = left_out
        self.n_branches = n_branches
        self._clusterer = AnswerClusterer(equivalent)
        self._start = time.monotonic()
        self.answers: dict[int, str | None] = {}
        self.decision: StopDecision | None = None

    async def add(
        self,
        *,
        branch: int,
        answer: str | None,
        mean_logprob: float | None,
        confidence: float | None = None,
    ) -> StopDecision:
        self.answers[branch] = answer
        await self._clusterer.add(
            BranchAnswer(
                branch_id=str(branch),
                answer=answer,
                finished_at=time.monotonic() - self._start,
                mean_logprob=mean_logprob,
                confidence=confidence,
            )
        )
        state = self._clusterer.state(self.n_branches)
        if state.remaining == 0:  # nothing left to stop: the vote simply completed
            return StopDecision(stop=False, reason="every branch finished")
        decision = self.rule.should_stop(state)
        if decision.stop and self.decision is None:
            self.decision = decision
        return decision

    def drop(self) -> None:
        """A branch was pruned: it will never vote, so it no longer counts as unfinished."""
        self.n_branches -= 1

    def left_out(self) -> set[str]:
        if self._left_out is None or self.aggregation is not Aggregation.CONFIDENCE:
            return set()
        return {str(i) for i in self._left_out()}

    def vote(self) -> VoteResult:
        return self._clusterer.vote(self.aggregation, keep=self.keep, left_out=self.left_out())

    def standing(self) -> tuple[str, float] | None:
        """The current leader and its share of the votes (of the weight for a weighted or
        confidence vote); None before any parseable answer."""
        result = self._clusterer.vote(self.aggregation, left_out=self.left_out())
        if result.winner_index is None:
            return None
        leader = result.clusters[result.winner_index]
        if self.aggregation in (Aggregation.WEIGHTED, Aggregation.CONFIDENCE):
            total = sum(c.weight for c in result.clusters)
            return leader.answer, leader.weight / total if total > 0 else 0.0
        return leader.answer, leader.count / sum(c.count for c in result.clusters)
