"""Judges of closed thoughts: (a) does a thought reach an answer, (b) do two answers agree.

Both judges sit behind `ThoughtJudge`, so the trimming controller, the offline replay and the
verifier service drive either one the same way:

* `RuleJudge` - the intermediate-answer extractor graded by `AnswerStrength` for (a), and
  math-verify equivalence (an `EquivalenceChecker`, which runs it off the event loop) for (b).
  Cheap, math only.
* `LlmJudge` - a small instruction-tuned verifier asked few-shot Yes/No questions, decided from
  the Yes vs No log-probabilities of a single generated token. It takes an injected
  ``score(prompt) -> {token: logprob}`` coroutine, so this package never imports an HTTP
  client; the service wires a real worker (``max_tokens=1``, top logprobs) behind it. Prompts are
  files in ``verifiers/prompts/``; their fixed instructions and examples come first, so every
  call shares one long prefix that the worker's prefix cache serves.
"""

from __future__ import annotations

import abc
import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from verifiers.answer_text import answer_value, is_value, names_foreign_unknown, split_sentences
from verifiers.intermediate import (
    AnswerExtractorConfig,
    AnswerStrength,
    IntermediateAnswer,
    IntermediateAnswerExtractor,
    QuestionTarget,
)
from verifiers.segmentation import Thought

__all__ = [
    "AnswerComparer",
    "JudgeContext",
    "LlmJudge",
    "LlmJudgeConfig",
    "PromptTemplate",
    "RuleJudge",
    "RuleJudgeConfig",
    "ScoreFn",
    "ThoughtJudge",
    "Verdict",
    "yes_probability",
]

ScoreFn = Callable[[str], Awaitable[Mapping[str, float]]]
"""prompt -> top log-probabilities of the next token (token text -> natural-log probability)."""


class AnswerComparer(Protocol):
    """What the rule judge needs of `verifiers.equivalence.EquivalenceChecker`."""

    async def equivalent(self, gold: str, pred: str) -> bool: ...


class Verdict(BaseModel):
    """One judge answer."""

    model_config = ConfigDict(frozen=True)

    positive: bool = Field(description="Yes: the thought reaches an answer / the answers agree.")
    score: float = Field(ge=0.0, le=1.0, description="Confidence in Yes, 0..1.")
    answer: str | None = Field(
        default=None,
        description="reaches_answer only: the thought's candidate answer (also on a weak No).",
    )
    confirms: bool = Field(
        default=False,
        description="reaches_answer only: the thought confirms the previous answer unrestated.",
    )
    reason: str = Field(default="", description="Why, for logs and trim records.")


class JudgeContext(BaseModel):
    """What a judge may know besides the thought."""

    model_config = ConfigDict(frozen=True)

    problem: str = Field(default="", description="The problem statement the branch is solving.")
    family: str = Field(
        default="generic", description="Model family of the branch (selects its cue settings)."
    )


class ThoughtJudge(abc.ABC):
    """The two checks TrimR needs. Implementations must not block the event loop."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def reaches_answer(self, thought: Thought, context: JudgeContext) -> Verdict:
        """Does `thought` conclude with an answer to the problem? Verdict.answer carries it."""

    @abc.abstractmethod
    async def consistent(
        self, prev_answer: str, answer: str, context: JudgeContext | None = None
    ) -> Verdict:
        """Are two answers (from `reaches_answer`) the same answer?"""

    def gradeable_answer(self, answer: str) -> str | None:
        """A `Verdict.answer` of this judge as an answer an equivalence checker can grade."""
        return answer

    async def reaches_answer_many(
        self, items: Sequence[tuple[Thought, JudgeContext]]
    ) -> list[Verdict]:
        """Batched form; the default runs the single checks concurrently."""
        return list(await asyncio.gather(*(self.reaches_answer(t, c) for t, c in items)))

    async def consistent_many(
        self, pairs: Sequence[tuple[str, str]], context: JudgeContext | None = None
    ) -> list[Verdict]:
        return list(await asyncio.gather(*(self.consistent(a, b, context) for a, b in pairs)))


# -- rule judge ------------------------------------------------------------------------------


class RuleJudgeConfig(BaseModel):
    """Knobs of the rule judge."""

    model_config = ConfigDict(frozen=True)

    extractor: AnswerExtractorConfig = Field(default_factory=AnswerExtractorConfig)
    min_strength: AnswerStrength = Field(
        default=AnswerStrength.TARGET,
        description="Weakest candidate grade that counts as reaching an answer.",
    )
    count_confirmations: bool = Field(
        default=True,
        description='A bare confirmation ("Yes, that checks out.") agrees with the last answer.',
    )
    thought_end_strength: AnswerStrength | None = Field(
        default=None,
        description="Weaker bar for a paragraph that ends a thought: the next paragraph opens "
        "with one of `thought_end_markers` (the model turns to re-check what it concluded). "
        "None: one bar everywhere.",
    )
    thought_end_markers: frozenset[str] = Field(
        default=frozenset(),
        description="Reflection markers after which the closing paragraph's candidate meets "
        "`thought_end_strength`.",
    )

    def reaches(self, thought: Thought, found: IntermediateAnswer | None) -> bool:
        """Does the candidate clear the bar: `min_strength`, or at a thought's end (the next
        paragraph opens with one of `thought_end_markers`) `thought_end_strength` for a
        number-valued candidate ("D^2" there is a definition being re-checked)."""
        if found is None:
            return False
        if found.strength >= self.min_strength:
            return True
        return (
            self.thought_end_strength is not None
            and found.strength >= self.thought_end_strength
            and thought.next_marker in self.thought_end_markers
            and is_value(found.answer)
        )


@lru_cache(maxsize=256)
def _target_of(problem: str) -> QuestionTarget:
    return QuestionTarget.from_problem(problem)


class RuleJudge(ThoughtJudge):
    """Extraction + math-verify equivalence."""

    name: ClassVar[str] = "rule"

    def __init__(
        self,
        checker: AnswerComparer,
        config: RuleJudgeConfig | None = None,
        *,
        by_family: Mapping[str, RuleJudgeConfig] | None = None,
    ) -> None:
        """`by_family`: per-family settings (`JudgeContext.family`); `config` for the rest."""
        self._checker = checker
        self._config = config or RuleJudgeConfig()
        self._by_family = dict(by_family or {})
        self._extractors = {
            cfg: IntermediateAnswerExtractor(cfg.extractor)
            for cfg in (self._config, *self._by_family.values())
        }

    @property
    def config(self) -> RuleJudgeConfig:
        return self._config

    def config_for(self, family: str) -> RuleJudgeConfig:
        return self._by_family.get(family, self._config)

    async def reaches_answer(self, thought: Thought, context: JudgeContext) -> Verdict:
        # Extraction is a few regexes over the thought's last sentences: microseconds, no offload.
        config = self.config_for(context.family)
        extractor = self._extractors[config]
        found = extractor.extract(thought.text, target=_target_of(context.problem))
        positive = config.reaches(thought, found) and not (
            found is not None and names_foreign_unknown(found.answer, context.problem)
        )
        # "So, 10% is correct." after "... less than 66,200": the thought vouches for a value
        # of its own, which may not be the previous answer - a candidate, not a confirmation.
        own_value = found is not None and found.cue.startswith("declared-right")
        if (
            not positive
            and not own_value
            and config.count_confirmations
            and extractor.confirms(thought.text)
        ):
            return Verdict(
                positive=True, score=0.5, confirms=True, reason="confirms the previous answer"
            )
        if found is None:
            return Verdict(positive=False, score=0.0, reason="no candidate answer")
        return Verdict(
            positive=positive,
            score=found.strength / AnswerStrength.BOXED,
            answer=found.answer,
            reason=f"{found.strength.name.lower()} via {found.cue}: {found.answer!r}",
        )

    def gradeable_answer(self, answer: str) -> str | None:
        """Unit words and currency signs dropped ("5 times" -> "5"): math-verify reads values."""
        return answer_value(answer)

    async def consistent(
        self, prev_answer: str, answer: str, context: JudgeContext | None = None
    ) -> Verdict:
        same = await self._checker.equivalent(answer_value(prev_answer), answer_value(answer))
        return Verdict(
            positive=same,
            score=1.0 if same else 0.0,
            reason=f"{prev_answer!r} {'==' if same else '!='} {answer!r}",
        )


# -- LLM judge -------------------------------------------------------------------------------


_SLOT = re.compile(r"\{\{(\w+)\}\}")


class PromptTemplate(BaseModel):
    """A prompt file: fixed text with ``{{name}}`` slots, all slots after the shared prefix."""

    model_config = ConfigDict(frozen=True)

    name: str
    text: str

    @classmethod
    def load(cls, name: str, directory: Path | None = None) -> PromptTemplate:
        if directory is None:
            text = (
                resources.files("verifiers").joinpath("prompts", f"{name}.txt").read_text("utf-8")
            )
        else:
            text = (directory / f"{name}.txt").read_text("utf-8")
        return cls(name=name, text=text)

    @property
    def shared_prefix(self) -> str:
        """Everything before the first slot: identical for every call."""
        at = self.text.find("{{")
        return self.text if at < 0 else self.text[:at]

    @property
    def slots(self) -> frozenset[str]:
        return frozenset(_SLOT.findall(self.text))

    def render(self, **values: str) -> str:
        if set(values) != self.slots:
            raise ValueError(
                f"prompt {self.name!r} takes slots {sorted(self.slots)}, got {sorted(values)}"
            )
        return _SLOT.sub(lambda m: values[m.group(1)], self.text)


class LlmJudgeConfig(BaseModel):
    """Knobs of the LLM judge."""

    model_config = ConfigDict(frozen=True)

    tail_sentences: int = Field(
        default=4, ge=1, description="Last sentences of a thought shown to the verifier."
    )
    max_tail_chars: int = Field(default=1200, ge=50, description="Cap on the shown tail.")
    max_problem_chars: int = Field(default=2000, ge=50, description="Cap on the shown problem.")
    yes_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0, description="P(Yes | Yes or No) at or above which: Yes."
    )
    prompt_dir: Path | None = Field(
        default=None, description="Directory of prompt files; None uses the packaged prompts."
    )


def yes_probability(top_logprobs: Mapping[str, float]) -> float | None:
    """P(Yes) / (P(Yes) + P(No)) over the top tokens ("Yes", " yes", "YES." ...), or None."""
    yes = no = 0.0
    for token, logprob in top_logprobs.items():
        word = token.strip().strip(".,:!").lower()
        if word == "yes":
            yes += math.exp(logprob)
        elif word == "no":
            no += math.exp(logprob)
    if yes + no == 0.0:
        return None
    return yes / (yes + no)


class LlmJudge(ThoughtJudge):
    """Few-shot Yes/No questions to a small verifier model, decided from one token's logprobs."""

    name: ClassVar[str] = "llm"

    def __init__(self, score: ScoreFn, config: LlmJudgeConfig | None = None) -> None:
        self._score = score
        self._config = config or LlmJudgeConfig()
        self._extractor = IntermediateAnswerExtractor()
        self._reaches = PromptTemplate.load("reaches_answer", self._config.prompt_dir)
        self._consistent = PromptTemplate.load("consistent", self._config.prompt_dir)

    @property
    def prompts(self) -> tuple[PromptTemplate, PromptTemplate]:
        return self._reaches, self._consistent

    def gradeable_answer(self, answer: str) -> str | None:
        """Verdict answers are thought tails here; read the candidate answer out of one."""
        found = self._extractor.extract(answer)
        return found.answer if found is not None else None

    def thought_tail(self, thought: Thought) -> str:
        tail = " ".join(split_sentences(thought.text)[-self._config.tail_sentences :])
        return tail[-self._config.max_tail_chars :]

    def reaches_prompt(self, thought: Thought, context: JudgeContext) -> str:
        return self._reaches.render(
            problem=context.problem[: self._config.max_problem_chars].strip(),
            thought=self.thought_tail(thought),
        )

    def consistent_prompt(self, prev_answer: str, answer: str) -> str:
        return self._consistent.render(first=prev_answer, second=answer)

    async def reaches_answer(self, thought: Thought, context: JudgeContext) -> Verdict:
        tail = self.thought_tail(thought)
        if not tail:
            return Verdict(positive=False, score=0.0, reason="empty thought")
        verdict = await self._ask(self.reaches_prompt(thought, context))
        return verdict.model_copy(update={"answer": tail if verdict.positive else None})

    async def consistent(
        self, prev_answer: str, answer: str, context: JudgeContext | None = None
    ) -> Verdict:
        return await self._ask(self.consistent_prompt(prev_answer, answer))

    async def _ask(self, prompt: str) -> Verdict:
        p_yes = yes_probability(await self._score(prompt))
        if p_yes is None:
            return Verdict(positive=False, score=0.0, reason="neither Yes nor No in top logprobs")
        return Verdict(
            positive=p_yes >= self._config.yes_threshold,
            score=p_yes,
            reason=f"P(yes)={p_yes:.3f}",
        )
