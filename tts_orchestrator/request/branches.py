"""Per-request view of its branches, and the presenters that decide what the client sees.

`SinglePresenter` streams one branch's deltas as they come. `VotingPresenter` streams the
reasoning of the branch it follows live, votes as branches finish, asks for the losers to be
aborted once the vote is safe, and then streams the winning answer as `content`. Under
DeepConf's ``warmup_first`` it also holds the branches past the warm-up (``waiting``) until the
warm-up has set the pruning threshold; the orchestrator starts them when `take_starts` says.
"""

from __future__ import annotations

import abc
import time
from typing import Any

from tts_orchestrator.actors.jobs import BranchChunk
from tts_orchestrator.exceptions import WorkerError
from tts_orchestrator.protocol import TtsOptions
from tts_orchestrator.request.branch_state import BranchState, Intervention
from tts_orchestrator.request.confidence import BranchConfidence
from tts_orchestrator.request.consensus import Consensus, branch_answer_text
from tts_orchestrator.request.events import OutputEvent
from tts_orchestrator.state.records import BranchRecord, RecordUsage
from tts_orchestrator.trim.trimmer import BranchTrimmer
from verifiers.families import ModelFamily
from verifiers.reasoning import ReasoningSplitter
from verifiers.voting import EquivalenceFn


class Presenter(abc.ABC):
    """Turns branch chunks into client events; owns the branches' state."""

    def __init__(
        self,
        seeds: list[int | None],
        *,
        family: ModelFamily,
        thinking_budget: int | None = None,
        answer_budget: int = 512,
        max_tokens: int | None = None,
        confidence: BranchConfidence | None = None,
    ) -> None:
        self.branches = [BranchState(i, s, ReasoningSplitter(family)) for i, s in enumerate(seeds)]
        self.family = family
        self.finish_reason: str | None = None
        self.thinking_budget = thinking_budget
        self.answer_budget = answer_budget
        #: Tokens each branch may generate in all (the request's ``max_tokens``).
        self.max_tokens = max_tokens
        self.confidence = confidence
        self._prunes: list[int] = []
        #: Branches not started yet: they wait for the warm-up's threshold (``warmup_first``).
        self.waiting: list[int] = []
        self._interventions: list[Intervention] = []
        self.trimmers: dict[int, BranchTrimmer] = {}
        #: Tokens an earlier phase of the request spent (the fast probes of ``auto``).
        self.prior_usage: RecordUsage | None = None

    def _may_intervene(self, b: BranchState) -> bool:
        return (
            b.splitter.in_thinking
            and not b.done
            and not b.interventions
            and not any(i.branch == b.index for i in self._interventions)
        )

    def _check_trim(self, b: BranchState, thinking_delta: str) -> None:
        """Feed TrimR; act on a decision (which may have come from a late verdict)."""
        trimmer = self.trimmers.get(b.index)
        if trimmer is None or not self._may_intervene(b):
            return
        decision = trimmer.feed(thinking_delta, tokens=b.thinking_tokens)
        if decision is None:
            return
        self._interventions.append(
            Intervention(
                branch=b.index,
                rule=decision.rule.value,
                reason=decision.reason,
                injected=trimmer.intervention_text(decision),
                max_tokens=self._answer_tokens(b),
                preset=trimmer.preset.family,
            )
        )

    def close_trimmers(self) -> None:
        for trimmer in self.trimmers.values():
            trimmer.close()

    def thinking_limit(self) -> int | None:
        """Thinking tokens a branch may spend: its thinking budget, and never so many that an
        answer no longer fits in ``max_tokens`` (the answer keeps ``min(answer_budget,
        max_tokens // 2)`` of it), so thinking cannot eat the whole budget."""
        limit = self.thinking_budget
        if self.max_tokens is not None and self.family.has_markers:
            cap = self.max_tokens - min(self.answer_budget, self.max_tokens // 2)
            limit = cap if limit is None else min(limit, cap)
        return limit

    def _answer_tokens(self, b: BranchState) -> int:
        """Tokens the answer after a cut may take: the answer budget, within max_tokens."""
        if self.max_tokens is None:
            return self.answer_budget
        return max(1, min(self.answer_budget, self.max_tokens - b.tokens))

    def _check_budget(self, b: BranchState) -> None:
        """Queue a forceful close when a branch spends its thinking budget (or the part of
        ``max_tokens`` thinking may take)."""
        limit = self.thinking_limit()
        if limit is None or not self._may_intervene(b) or b.thinking_tokens < limit:
            return
        assert self.family.think_close is not None
        what = (
            f"thinking budget of {limit} tokens spent"
            if limit == self.thinking_budget
            else f"{limit} thinking tokens spent; the rest of max_tokens is kept for the answer"
        )
        self._interventions.append(
            Intervention(
                branch=b.index,
                rule="thinking_budget",
                reason=what,
                injected=f"\n\nI have thought about this long enough; time to give the answer."
                f"\n{self.family.think_close}\n\n",
                max_tokens=self._answer_tokens(b),
            )
        )

    def take_interventions(self) -> list[Intervention]:
        taken, self._interventions = self._interventions, []
        return taken

    def apply_intervention(self, iv: Intervention) -> list[OutputEvent]:
        """The injected text joins the branch; events for it if this branch is being shown."""
        r, c = self.branches[iv.branch].intervene(iv)
        return self._shown(iv.branch, r, c)

    def _shown(self, branch: int, r: str, c: str) -> list[OutputEvent]:
        return [OutputEvent(reasoning=r, content=c)] if (r or c) else []

    def interventions_detail(self) -> list[dict[str, Any]] | None:
        out = [{"branch": b.index, **iv} for b in self.branches for iv in b.interventions]
        return out or None

    @property
    def all_done(self) -> bool:
        return all(b.done for b in self.branches)

    @abc.abstractmethod
    async def observe(self, item: BranchChunk) -> list[OutputEvent]:
        """Events to send for this chunk."""

    def take_aborts(self) -> tuple[list[int], str] | None:
        """Branches to abort now (and why), if the presenter decided so."""
        return None

    def take_starts(self, *, force: bool = False) -> list[int]:
        """The waiting branches to start now: once the warm-up has set the threshold, or has
        ended without setting one (a failed or answerless warm-up branch), or ``force`` (every
        started stream ended). Branches an early stop already ended never start."""
        if not self.waiting:
            return []
        assert self.confidence is not None
        started_done = all(b.done for b in self.branches if b.index not in self.waiting)
        if not (force or started_done or self.confidence.threshold is not None):
            return []
        starts = [i for i in self.waiting if not self.branches[i].done]
        self.waiting = []
        return starts

    def take_prunes(self) -> list[int]:
        """Branches DeepConf's gate pruned since the last call (abort them now)."""
        taken, self._prunes = self._prunes, []
        return taken

    def _track(self, b: BranchState, item: BranchChunk) -> None:
        if self.confidence is not None and item.chunk is not None:
            self.confidence.feed(b.index, item.chunk)

    @abc.abstractmethod
    async def finish(self, *, budget_reached: bool = False) -> list[OutputEvent]:
        """The closing events (the last one has `finish_reason`)."""

    def abort_running(self, reason: str) -> list[int]:
        running = [b.index for b in self.branches if not b.done]
        for i in running:
            self.branches[i].abort_reason = reason
        return running

    def answer_text(self) -> str:
        return "".join(self.branches[0].content)

    def fill_prompt_tokens(self, n: int) -> None:
        """Aborted branches never got a usage report: their prompt was the same."""
        for b in self.branches:
            if b.prompt_tokens == 0:
                b.prompt_tokens = n

    def worker_timings(self) -> dict[str, float]:
        """The engine's own timings of the first branch (prefill and decode), in ms."""
        t = self.branches[0].timings
        keep = {"prompt_ms": "worker_prompt_ms", "predicted_per_token_ms": "worker_ms_per_token"}
        return {new: round(float(t[old]), 3) for old, new in keep.items() if old in t}

    def known_prompt_tokens(self) -> int:
        return max((b.prompt_tokens for b in self.branches), default=0)

    def usage(self) -> RecordUsage:
        """Tokens of every branch, plus those of an earlier phase (a mode probe) if any."""
        before = self.prior_usage or RecordUsage()
        prompt = sum(b.prompt_tokens for b in self.branches) + before.prompt_tokens
        completion = sum(b.tokens for b in self.branches) + before.completion_tokens
        cached = sum(b.cached_prompt_tokens for b in self.branches) + before.cached_prompt_tokens
        reasoning = sum(b.thinking_tokens for b in self.branches) + before.reasoning_tokens
        return RecordUsage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            reasoning_tokens=reasoning,
            cached_prompt_tokens=cached,
            total_tokens=prompt + completion,
        )

    def tokens_detail(self) -> dict[str, int]:
        """Where the generated tokens went (the ``tts.tokens`` block): ``pruned`` is what the
        branches DeepConf pruned spent, ``aborted`` what the branches an early stop or the
        latency budget cut spent, ``trimmed`` the thinking of branches cut by TrimR or a
        thinking budget up to the cut. ``saved_by_pruning_estimate`` is an estimate: each
        pruned branch's shortfall against the mean length of the branches that finished."""
        usage = self.usage()
        finished = [b.tokens for b in self.branches if b.finish_reason is not None]
        mean_finished = sum(finished) / len(finished) if finished else 0.0
        pruned = [b for b in self.branches if b.pruned]
        return {
            "generated": usage.completion_tokens,
            "reasoning": usage.reasoning_tokens,
            "pruned": sum(b.tokens for b in pruned),
            "aborted": sum(b.tokens for b in self.branches if b.aborted and not b.pruned),
            "trimmed": sum(
                int(b.interventions[0]["thinking_tokens"]) for b in self.branches if b.interventions
            ),
            "saved_by_pruning_estimate": round(
                sum(max(0.0, mean_finished - b.tokens) for b in pruned)
            ),
        }

    def branch_details(self) -> list[dict[str, Any]]:
        out = []
        for b in self.branches:
            d = b.detail()
            if self.confidence is not None:
                d["confidence"] = self.confidence.detail(b.index)
            out.append(d)
        return out

    def branch_records(self) -> list[BranchRecord]:
        records = [b.record() for b in self.branches]
        if self.confidence is not None:
            for r in records:
                r.confidence = self.confidence.weight(r.index)
        return records

    def vote_detail(self) -> dict[str, Any] | None:
        return None


class SinglePresenter(Presenter):
    """One branch: every delta goes out as it arrives."""

    async def observe(self, item: BranchChunk) -> list[OutputEvent]:
        b = self.branches[item.branch]
        r, c = b.add(item)
        self._track(b, item)
        if b.error is not None:
            raise WorkerError(f"generation failed on {b.worker or 'a worker'}: {b.error}")
        self._check_budget(b)
        self._check_trim(b, r)
        return self._shown(b.index, r, c)

    async def finish(self, *, budget_reached: bool = False) -> list[OutputEvent]:
        b = self.branches[0]
        if budget_reached:
            self.abort_running("latency budget reached")
        self.finish_reason = b.finish_reason or "length"
        reasoning, content = b.text()
        b.answer = branch_answer_text(content, reasoning)
        tts: dict[str, Any] = {"tokens": self.tokens_detail()}
        if self.confidence is not None:
            tts["branches"] = self.branch_details()
        return [OutputEvent(finish_reason=self.finish_reason, usage=self.usage(), tts=tts)]


class VotingPresenter(Presenter):
    """N branches: follow one branch's reasoning live, vote, then send the winner's answer."""

    def __init__(
        self,
        seeds: list[int | None],
        *,
        family: ModelFamily,
        tts: TtsOptions,
        equivalent: EquivalenceFn,
        thinking_budget: int | None = None,
        answer_budget: int = 512,
        max_tokens: int | None = None,
        confidence: BranchConfidence | None = None,
        safe_lead: bool = True,
    ) -> None:
        super().__init__(
            seeds,
            family=family,
            thinking_budget=thinking_budget,
            answer_budget=answer_budget,
            max_tokens=max_tokens,
            confidence=confidence,
        )
        self.tts = tts
        self.consensus = Consensus(
            tts,
            n_branches=len(seeds),
            equivalent=equivalent,
            safe_lead=safe_lead,
            confidence=confidence.config if confidence is not None else None,
            left_out=confidence.left_out if confidence is not None else None,
        )
        if confidence is not None and confidence.prune and confidence.config.warmup_first:
            self.waiting = list(range(confidence.config.warmup, len(seeds)))
        self._follow: int | None = None
        self._aborts: tuple[list[int], str] | None = None
        self._start = time.monotonic()
        self._first_answer_s: float | None = None
        self._decided_s: float | None = None
        self._budget_reached = False
        self._winner: int | None = None
        self._vote: dict[str, Any] | None = None

    def _live_text(self, r: str, c: str) -> str:
        # Without thinking markers a branch's whole text is its reasoning until the vote.
        return r if self.family.has_markers else r + c

    async def observe(self, item: BranchChunk) -> list[OutputEvent]:
        b = self.branches[item.branch]
        if b.done:
            return []  # a late chunk of a branch already aborted
        r, c = b.add(item)
        self._track(b, item)
        events: list[OutputEvent] = []
        if self._follow is None and (r or c):
            self._follow = b.index
            if any(x.done for x in self.branches):  # a branch started after the warm-up
                events.append(OutputEvent(reasoning=f"\n\n[branch {b.index}]\n"))
        events += self._shown(b.index, r, c)
        self._check_budget(b)
        self._check_trim(b, r)
        if b.finish_reason is not None or b.error is not None:
            await self._branch_ended(b)
            events += self._switch_follow()
            events.append(self._progress())
        elif self.confidence is not None and (why := self.confidence.prune_reason(b.index)):
            b.abort_reason, b.pruned = why, True
            self._prunes.append(b.index)
            self.consensus.drop()
            events += self._switch_follow()
            events.append(self._progress())
        return events

    def _progress(self) -> OutputEvent:
        """A progress event: branches alive / pruned / finished and the current leader."""
        standing = self.consensus.standing()
        progress: dict[str, Any] = {
            "alive": sum(1 for b in self.branches if not b.done),
            "pruned": sum(1 for b in self.branches if b.pruned),
            "finished": sum(1 for b in self.branches if b.finish_reason is not None),
            "leader": standing[0] if standing is not None else None,
            "share": round(standing[1], 4) if standing is not None else None,
        }
        return OutputEvent(tts={"progress": progress})

    async def _branch_ended(self, b: BranchState) -> None:
        if b.error is not None and all(x.error is not None for x in self.branches):
            raise WorkerError(f"every branch failed; last: {b.error}")
        if b.error is not None:
            return  # a failed branch casts no vote; the others still can
        reasoning, content = b.text()
        b.answer = branch_answer_text(content, reasoning)
        if b.answer is not None and self._first_answer_s is None:
            self._first_answer_s = time.monotonic() - self._start
        weight = None
        if self.confidence is not None:
            self.confidence.finished(b.index)
            weight = self.confidence.weight(b.index)
        decision = await self.consensus.add(
            branch=b.index, answer=b.answer, mean_logprob=b.mean_logprob, confidence=weight
        )
        if decision.stop and self._aborts is None:
            self._decided_s = time.monotonic() - self._start
            running = self.abort_running(f"early stop: {decision.reason}")
            self._aborts = (running, decision.reason)

    def _shown(self, branch: int, r: str, c: str) -> list[OutputEvent]:
        if branch != self._follow:
            return []
        live = self._live_text(r, c)
        return [OutputEvent(reasoning=live)] if live else []

    def _switch_follow(self) -> list[OutputEvent]:
        if self._follow is None or not self.branches[self._follow].done:
            return []
        running = [b for b in self.branches if not b.done and b.index not in self.waiting]
        if not running:
            self._follow = None  # the next branch to stream (a waiting one, once started)
            return []
        nxt = max(running, key=lambda b: b.tokens)
        self._follow = nxt.index
        r, c = nxt.text()
        return [OutputEvent(reasoning=f"\n\n[branch {nxt.index}]\n" + self._live_text(r, c))]

    def take_aborts(self) -> tuple[list[int], str] | None:
        aborts, self._aborts = self._aborts, None
        return aborts if aborts and aborts[0] else None

    async def finish(self, *, budget_reached: bool = False) -> list[OutputEvent]:
        self._budget_reached = budget_reached
        if budget_reached:
            self.abort_running("latency budget reached: answered with the best vote so far")
        vote = self.consensus.vote()
        winner = self._winning_branch(vote.winner_index, [c.branch_ids for c in vote.clusters])
        self._winner = winner.index if winner is not None else None
        if winner is not None:
            content = (
                "".join(winner.content)
                if self.family.has_markers
                else "".join(winner.reasoning + winner.content)
            )
            self.finish_reason = winner.finish_reason or "length"
        else:
            content = ""
            self.finish_reason = "length" if budget_reached else "stop"
        self._vote = {
            "winner": vote.winner,
            "winner_branch": self._winner,
            "reason": vote.reason,
            "clusters": [
                {
                    "answer": c.answer,
                    "count": c.count,
                    "weight": round(c.weight, 6),
                    "branches": [int(i) for i in c.branch_ids],
                }
                for c in vote.clusters
            ],
            "unparseable": [int(i) for i in vote.unparseable],
            "filtered": [int(i) for i in vote.filtered],
        }
        events = [OutputEvent(content=content)] if content else []
        events.append(
            OutputEvent(finish_reason=self.finish_reason, usage=self.usage(), tts=self.tts_detail())
        )
        return events

    def _winning_branch(self, index: int | None, members: list[list[str]]) -> BranchState | None:
        if index is not None:
            return self.branches[int(members[index][0])]
        finished = [b for b in self.branches if b.finish_reason is not None]
        return min(finished, key=lambda b: b.finished_at or 0.0) if finished else None

    def answer_text(self) -> str:
        if self._winner is None:
            return ""
        w = self.branches[self._winner]
        return "".join(w.content) if self.family.has_markers else "".join(w.reasoning + w.content)

    def vote_detail(self) -> dict[str, Any] | None:
        return self._vote

    def tts_detail(self) -> dict[str, Any]:
        decision = self.consensus.decision
        timings = {"total_s": round(time.monotonic() - self._start, 6)}
        if self._first_answer_s is not None:
            timings["first_answer_s"] = round(self._first_answer_s, 6)
        if self._decided_s is not None:
            timings["decided_s"] = round(self._decided_s, 6)
        out = {
            "n_branches": len(self.branches),
            "aggregation": self.tts.aggregation,
            "early_stop": {
                "rule": self.tts.early_stop,
                "fired": decision is not None,
                "reason": decision.reason if decision is not None else None,
            },
            "budget_reached": self._budget_reached,
            "vote": self._vote,
            "branches": self.branch_details(),
            "tokens": self.tokens_detail(),
            "timings": timings,
        }
        if self.confidence is not None:
            out["confidence"] = self.confidence.gate_detail()
        return out
