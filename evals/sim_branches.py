"""What one recorded trace becomes as one branch of a simulated request (see `evals.simulation`).

A branch replays its trace. Under a thinking budget and/or TrimR trimming it is cut where the
service would cut it, and then states the answer it had reached:

* **trimming** runs `verifiers.trim_replay.replay_trace` - the function ``trim-replay`` runs -
  i.e. the live segmenter, rule judge and `TrimController`, with the configured verdict delay;
  the cut is where the rule fired and the answer is the controller's (judge's gradeable form);
* a **thinking budget** applies as the service applies it (`Presenter._check_budget`): only to a
  model with thinking markers, once the branch's thinking reaches ``budget`` tokens (real Qwen2.5
  tokens here); the answer is the latest one the rule judge finds in the thoughts so far (a
  conclusion, else a weaker candidate), the way a forced stop's answer is read in TrimR;
* otherwise the answer is extracted from the recorded text exactly as the service extracts it
  (`Trace.answer`), never the source's own ``final_answer``.

A cut branch then writes the service's injected text plus its answer; those tokens are counted
(the recorded answer section is not generated). Ground truth and labels grade a branch after the
fact and steer nothing: a branch's cut, answer and tokens depend only on its text and problem.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from verifiers.judges import AnswerComparer, JudgeContext, ThoughtJudge
from verifiers.segmentation import SegmenterConfig, ThoughtSegmenter
from verifiers.traces import ThinkingSplit, TokenCounter, Trace
from verifiers.trim_replay import ReplayConfig, ReplayTrace, family_for_model, replay_trace
from verifiers.trimr import InterventionConfig, TrimRConfig, TrimRule, build_intervention

__all__ = ["BranchBank", "BranchCut", "BranchOutcome"]

# The service's budget intervention (tts_orchestrator.request.branches.Presenter._check_budget).
_BUDGET_SENTENCE = "\n\nI have thought about this long enough; time to give the answer."


class BranchCut(StrEnum):
    NONE = "none"
    TRIM = "trim"
    BUDGET = "budget"


class BranchOutcome(BaseModel):
    """One trace played as a branch under one (trim, budget) setting."""

    model_config = ConfigDict(frozen=True)

    trace_id: str
    thinking_tokens: int = Field(description="Thinking tokens generated (to the cut, if cut).")
    recorded_thinking_tokens: int = Field(description="Thinking tokens of the whole recording.")
    answer_tokens: int = Field(description="Tokens after the thinking (injected text included).")
    answer: str | None = Field(description="The answer the branch reports (live-extracted).")
    cut: BranchCut = BranchCut.NONE
    rule: TrimRule | None = None

    @property
    def tokens(self) -> int:
        return self.thinking_tokens + self.answer_tokens


class BranchBank:
    """Plays traces as branches, caching each (trace, trim, budget) outcome."""

    def __init__(
        self,
        *,
        counter: TokenCounter,
        judge: ThoughtJudge,
        checker: AnswerComparer,
        trimr: TrimRConfig | None = None,
        verdict_delay_tokens: int = 0,
    ) -> None:
        self.counter = counter
        self.judge = judge
        self._checker = checker
        # None: trim-replay's own default (the same rules `trim-replay` runs with no options).
        self.trimr = trimr
        self.verdict_delay_tokens = verdict_delay_tokens
        self._cache: dict[tuple[str, str, bool, int | None], BranchOutcome] = {}

    def prepare(self, traces: list[Trace]) -> None:
        """Count every trace's thinking and answer in one batch (counts are cached)."""
        self.counter.count_many([t.thinking_text for t in traces])
        self.counter.count_many([t.answer_text for t in traces])

    async def play(self, trace: Trace, *, trim: bool, budget: int | None) -> BranchOutcome:
        key = (trace.model, trace.id, trim, budget)
        if key not in self._cache:
            self._cache[key] = await self._play(trace, trim=trim, budget=budget)
        return self._cache[key]

    async def _play(self, trace: Trace, *, trim: bool, budget: int | None) -> BranchOutcome:
        thinking = trace.thinking_text
        total = self.counter.count(thinking)
        has_thinking = trace.thinking_delimiters is not None and trace.split not in (
            ThinkingSplit.NO_THINKING,
        )
        budget_chars: int | None = None
        if budget is not None and has_thinking and total > budget:
            budget_chars = self.counter.prefix_chars(thinking, budget)
        if trim and has_thinking and thinking:
            outcome = await replay_trace(
                ReplayTrace.from_trace(trace),
                judge=self.judge,
                checker=self._checker,
                config=self._replay_config(),
            )
            at = outcome.chars_at_trim
            if (
                outcome.rule is not None
                and at is not None
                and (budget_chars is None or at < budget_chars)
            ):
                return self._cut(
                    trace,
                    chars=at,
                    total=total,
                    answer=outcome.answer_at_trim,
                    cut=BranchCut.TRIM,
                    rule=outcome.rule,
                )
        if budget_chars is not None:
            answer = await self._reached_answer(trace, thinking[:budget_chars])
            return self._cut(
                trace, chars=budget_chars, total=total, answer=answer, cut=BranchCut.BUDGET
            )
        return BranchOutcome(
            trace_id=trace.id,
            thinking_tokens=total,
            recorded_thinking_tokens=total,
            answer_tokens=self.counter.count(trace.answer_text),
            answer=trace.answer,
        )

    def _cut(
        self,
        trace: Trace,
        *,
        chars: int,
        total: int,
        answer: str | None,
        cut: BranchCut,
        rule: TrimRule | None = None,
    ) -> BranchOutcome:
        close = InterventionConfig(close_marker=trace.think_close)
        injected = (
            build_intervention(rule, close)
            if rule is not None
            else f"{_BUDGET_SENTENCE}\n{trace.think_close}\n\n"
        )
        statement = f"The answer is $\\boxed{{{answer}}}$." if answer else "I cannot tell."
        return BranchOutcome(
            trace_id=trace.id,
            thinking_tokens=self.counter.count(trace.thinking_text[:chars]),
            recorded_thinking_tokens=total,
            answer_tokens=self.counter.count(injected + statement),
            answer=answer,
            cut=cut,
            rule=rule,
        )

    def _replay_config(self) -> ReplayConfig:
        rules = {} if self.trimr is None else {"trimr": self.trimr}
        return ReplayConfig(verdict_delay_tokens=self.verdict_delay_tokens, **rules)

    async def _reached_answer(self, trace: Trace, prefix: str) -> str | None:
        """The latest conclusion the rule judge finds in the thoughts of `prefix`, else its latest
        weaker candidate (what `TrimController.latest_answer` reports on a forced stop)."""
        segmenter = ThoughtSegmenter(SegmenterConfig(family=family_for_model(trace.model)))
        thoughts = [*segmenter.feed(prefix), *segmenter.finish()]
        context = JudgeContext(problem=trace.problem)
        strong: str | None = None
        weak: str | None = None
        for verdict in await self.judge.reaches_answer_many([(t, context) for t in thoughts]):
            if verdict.answer is None:
                continue
            weak = verdict.answer
            if verdict.positive:
                strong = verdict.answer
        found = strong or weak
        return None if found is None else self.judge.gradeable_answer(found)
