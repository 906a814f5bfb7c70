"""Live TrimR for one branch: segment its thinking, ask the verifier, act on late verdicts.

The branch never waits: `feed` returns at once; verdicts arrive through the verifier client
whenever they are ready and may set a decision that the presenter picks up on the next chunk.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from tts_orchestrator.trim.verifier_service import Verifier, VerifierJob, VerifierReply
from verifiers.equivalence import EquivalenceChecker
from verifiers.families import ModelFamily
from verifiers.judges import RuleJudge, ThoughtJudge
from verifiers.segmentation import SegmenterConfig, ThoughtSegmenter
from verifiers.trim_presets import TrimPreset, judge_configs
from verifiers.trimr import (
    ConsistencyRequest,
    InterventionConfig,
    TrimController,
    TrimDecision,
    TrimRConfig,
    build_intervention,
)

log = logging.getLogger(__name__)


def make_rule_judge() -> ThoughtJudge:
    """Picklable factory for verifier workers (each builds its own equivalence pool); each
    check is judged with its family's preset settings."""
    return RuleJudge(EquivalenceChecker(timeout_s=3.0), by_family=judge_configs())


class BranchTrimmer:
    def __init__(
        self,
        *,
        key: str,
        family: ModelFamily,
        preset: TrimPreset,
        config: TrimRConfig,
        token_budget: int,
        problem: str,
        verifier: Verifier,
    ) -> None:
        self.key = key
        self.family = family
        self.problem = problem
        self._verifier = verifier
        self.preset = preset
        self._segmenter = ThoughtSegmenter(
            SegmenterConfig(family=family.name, paragraphs=preset.paragraphs)
        )
        self._controller = TrimController(config, token_budget=token_budget, name=key)
        self._pairs: dict[str, ConsistencyRequest] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.decision: TrimDecision | None = None
        self.verdicts = 0
        verifier.register(key, self._on_reply)

    def feed(self, thinking_delta: str, *, tokens: int) -> TrimDecision | None:
        """New thinking text (and the branch's thinking-token count so far)."""
        if self.decision is not None or not thinking_delta:
            return self.decision
        decision = self._controller.observe_text(thinking_delta, token_count=tokens)
        for thought in self._segmenter.feed(thinking_delta):
            decision = decision or self._controller.observe_thought(thought)
            self._submit("reaches", tag=str(thought.index), problem=self.problem, thought=thought)
        self.decision = self.decision or decision
        return self.decision

    def _submit(self, kind: Literal["reaches", "consistent"], *, tag: str, **fields: Any) -> None:
        """Queue one check for the verifiers; the reply comes back to `_on_reply`."""
        job = VerifierJob(
            key=self.key, reply_to="", kind=kind, tag=tag, family=self.preset.family, **fields
        )
        task = asyncio.ensure_future(self._verifier.submit(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_reply(self, reply: VerifierReply) -> None:
        self.verdicts += 1
        if self.decision is not None:
            return
        decision: TrimDecision | None
        if reply.kind == "reaches":
            decision = self._controller.on_answer(int(reply.tag), reply.verdict)
        else:
            request = self._pairs.pop(reply.tag, None)
            if request is None:
                return
            decision = self._controller.on_consistency(request, reply.verdict)
        for req in self._controller.take_consistency_requests():
            tag = f"{req.first_thought}:{req.second_thought}"
            self._pairs[tag] = req
            self._submit("consistent", tag=tag, first=req.first_answer, second=req.second_answer)
        if decision is not None:
            self.decision = decision

    def intervention_text(self, decision: TrimDecision) -> str:
        return build_intervention(
            decision.rule, InterventionConfig(close_marker=self.family.think_close or "")
        )

    def close(self) -> None:
        self._verifier.unregister(self.key)


__all__ = ["BranchTrimmer", "make_rule_judge"]
