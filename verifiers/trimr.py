"""TrimR rules as one per-branch state machine, and the text injected when a rule fires.

`TrimController` is sans-I/O: the branch feeds it what it sees - streamed text
(`observe_text`), closed thoughts (`observe_thought`) and judge verdicts whenever they arrive
(`on_answer`, `on_consistency`) - and it returns a `TrimDecision` the moment a rule fires. It never
waits: verdicts may arrive late and in any order; the controller buffers them and replays the
answer chain in thought order, so the rule outcome does not depend on arrival order, only the
position at which it fires does. It asks for the consistency checks it needs through
`take_consistency_requests()`; the driver runs them on a judge and reports back.

Rules (every threshold in `TrimRConfig`; every trigger is logged with its reason):

* overthinking - `overthink_m` consecutive equivalent answers (default 2, i.e. three agreeing
  answer-bearing thoughts; thoughts without an answer neither count nor reset, and a thought the
  judge marks as a bare confirmation of the previous answer counts as agreeing with it). A
  mismatch resets the count, unless `tolerate_one_outlier` lets one disagreeing answer inside a
  run be skipped. M = 0: the first answer that clears the judge's bar stops the branch (for
  families that state an answer only when they mean it). With `weak_agreement`, a thought
  whose only candidate is weaker than the judge's bar (e.g. "= 12" about an unnamed quantity)
  counts as agreeing when it is equivalent to the run's answer (a re-derivation that lands on
  it), and is ignored otherwise: a weak candidate can extend a run, never start or break one.
* underthinking - no convergence (the current run of agreeing answers is empty, and no
  comparison that could extend it is pending) once the branch has used `underthink_ratio` of its
  token budget, or closed `underthink_max_thoughts` thoughts (`underthink_mode`: either or both).
* repetition - the rolling-hash loop detector of `verifiers.repetition` fires on the stream.

A decision carries the answer the branch had reached: the agreed answer for overthinking; for a
forced stop the candidate with the most support so far (`supported_answer`, its best guess).
"""

from __future__ import annotations

import enum
import logging
import re
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from verifiers.answers import normalize_answer
from verifiers.judges import Verdict
from verifiers.repetition import RepetitionConfig, RepetitionDetector
from verifiers.segmentation import Thought

__all__ = [
    "ConsistencyRequest",
    "InterventionConfig",
    "TrimController",
    "TrimDecision",
    "TrimRConfig",
    "TrimRule",
    "UnderthinkMode",
    "build_intervention",
]

logger = logging.getLogger(__name__)


def _answer_key(answer: str) -> str:
    return re.sub(r"\s+", "", normalize_answer(answer))


class TrimRule(enum.StrEnum):
    OVERTHINKING = "overthinking"
    UNDERTHINKING = "underthinking"
    REPETITION = "repetition"


class UnderthinkMode(enum.StrEnum):
    ANY = "any"  # budget share OR thought count
    ALL = "all"  # budget share AND thought count


class TrimRConfig(BaseModel):
    """Every threshold of the TrimR rules."""

    model_config = ConfigDict(frozen=True)

    rules: frozenset[TrimRule] = Field(
        default=frozenset(TrimRule), description="Rules that may fire."
    )
    overthink_m: int = Field(
        default=2,
        ge=0,
        description="Consecutive equivalent answers that mean overthinking (0: the first "
        "answer that clears the judge's bar stops the branch).",
    )
    tolerate_one_outlier: bool = Field(
        default=False, description="Skip one disagreeing answer inside a run instead of resetting."
    )
    weak_agreement: bool = Field(
        default=False,
        description="A weak candidate equivalent to the run's answer extends the run "
        "(a different one is ignored).",
    )
    underthink_ratio: float = Field(
        default=0.5, gt=0.0, le=1.0, description="Share of the token budget without convergence."
    )
    underthink_max_thoughts: int | None = Field(
        default=20, ge=1, description="Closed thoughts without convergence (None: no limit)."
    )
    underthink_max_answers: int | None = Field(
        default=None,
        ge=2,
        description="Answer-bearing thoughts without convergence (None: no limit): the branch "
        "keeps proposing answers that do not agree.",
    )
    underthink_mode: UnderthinkMode = Field(
        default=UnderthinkMode.ANY, description="Whether either or both limits trigger."
    )
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig)


class TrimDecision(BaseModel):
    """A fired rule: where to cut the branch and what it had concluded."""

    model_config = ConfigDict(frozen=True)

    rule: TrimRule
    reason: str = Field(description="Human-readable trigger, also logged.")
    at_char: int = Field(description="Characters of thinking streamed when the rule fired.")
    at_token: int = Field(description="Tokens of thinking streamed when the rule fired.")
    answer: str | None = Field(default=None, description="The branch's latest answer, if any.")
    thought_index: int | None = Field(
        default=None, description="The thought whose answer completed the trigger, if any."
    )


class ConsistencyRequest(BaseModel):
    """A pair of answers the controller needs compared."""

    model_config = ConfigDict(frozen=True)

    first_thought: int
    second_thought: int
    first_answer: str
    second_answer: str


class _Link(BaseModel):
    """An answer-bearing thought in the chain."""

    model_config = ConfigDict(frozen=True)

    thought: int
    answer: str
    weak: bool = False  # a below-the-bar candidate: may extend a run, never anchor or reset it


class TrimController:
    """Per-branch TrimR state machine (see the module docstring)."""

    def __init__(
        self,
        config: TrimRConfig | None = None,
        *,
        token_budget: int | None = None,
        name: str = "",
    ) -> None:
        self._config = config or TrimRConfig()
        self._budget = token_budget
        self._name = name
        # Also the word-piece counter when the engine reports no token counts.
        self._repetition = RepetitionDetector(self._config.repetition)
        self._chars = 0
        self._tokens: int | None = None  # engine-reported count, when the driver has one
        self._thoughts = 0
        self._verdicts: dict[int, Verdict] = {}
        self._known = 0  # thoughts 0.._known-1 have answer verdicts
        self._chain: list[_Link] = []
        self._links: dict[tuple[int, int], bool] = {}
        self._requested: set[tuple[int, int]] = set()
        self._outbox: list[ConsistencyRequest] = []
        self._cursor = 0
        self._anchor = 0
        self._streak = 0
        self._outlier_used = False
        self._latest_candidate: str | None = None
        # Every candidate answer in thought order, and whether it cleared the judge's bar.
        self._candidates: list[tuple[str, bool]] = []
        self.decision: TrimDecision | None = None

    # -- state -------------------------------------------------------------------------------

    @property
    def config(self) -> TrimRConfig:
        return self._config

    @property
    def chars(self) -> int:
        return self._chars

    @property
    def tokens(self) -> int:
        """Engine-reported tokens when given to `observe_text`, else word pieces."""
        return self._tokens if self._tokens is not None else self._repetition.pieces_seen

    @property
    def thoughts_closed(self) -> int:
        return self._thoughts

    @property
    def streak(self) -> int:
        """Consecutive equivalent answers so far (the overthinking count)."""
        return self._streak

    @property
    def latest_answer(self) -> str | None:
        """The latest answer that counted, else the latest weaker candidate (or None).

        A forced stop (underthinking, loop) makes the model answer from where it is: its last
        concluded answer or, failing that, its most recent result is the best guess of what it
        will write.
        """
        strong = [link for link in self._chain if not link.weak]
        return strong[-1].answer if strong else self._latest_candidate

    @property
    def supported_answer(self) -> str | None:
        """The candidate with the most support so far, else None.

        What a forced stop answers with: the answer the branch proposed most often is its best
        guess. Support counts candidates with the same normalised text, concluded or weaker;
        ties go to an answer that cleared the judge's bar, then to the latest.
        """
        counts = Counter(_answer_key(a) for a, _ in self._candidates)
        strong = {_answer_key(a) for a, positive in self._candidates if positive}
        best: tuple[int, bool, int] | None = None
        choice = None
        for position, (answer, _) in enumerate(self._candidates):
            key = _answer_key(answer)
            score = (counts[key], key in strong, position)
            if best is None or score > best:
                best, choice = score, answer
        return choice

    @property
    def answers_seen(self) -> int:
        """Answer-bearing thoughts so far (the judge's bar, not weaker candidates)."""
        return sum(not link.weak for link in self._chain)

    # -- events ------------------------------------------------------------------------------

    def observe_text(self, delta: str, *, token_count: int | None = None) -> TrimDecision | None:
        """Streamed thinking text; `token_count` is the engine's running total when known."""
        if self.decision is not None:
            return self.decision
        self._chars += len(delta)
        if token_count is not None:
            self._tokens = token_count
        hit = self._repetition.feed(delta)
        if TrimRule.REPETITION in self._config.rules and hit is not None:
            cfg = self._config.repetition
            return self._fire(
                TrimRule.REPETITION,
                f"a {cfg.ngram}-piece n-gram occurred {hit.occurrences} times within "
                f"{cfg.window} pieces: {hit.ngram_text[:80]!r}",
                answer=self.supported_answer,
            )
        return self._check_underthinking()

    def observe_thought(self, thought: Thought) -> TrimDecision | None:
        """A thought closed (its verdicts may come much later)."""
        if self.decision is not None:
            return self.decision
        self._thoughts = max(self._thoughts, thought.index + 1)
        return self._check_underthinking()

    def on_answer(self, thought_index: int, verdict: Verdict) -> TrimDecision | None:
        """The reaches-answer verdict of one thought, in any order."""
        if self.decision is not None:
            return self.decision
        self._verdicts[thought_index] = verdict
        while self._known in self._verdicts:
            known = self._verdicts[self._known]
            if known.answer is not None:
                self._latest_candidate = known.answer
                self._candidates.append((known.answer, known.positive))
            if known.positive and known.confirms and self._chain:
                # Agrees with the last answer by construction: no comparison needed.
                previous = self._chain[-1]
                self._chain.append(_Link(thought=self._known, answer=previous.answer))
                self._links[(previous.thought, self._known)] = True
            elif known.positive and known.answer is not None:
                self._chain.append(_Link(thought=self._known, answer=known.answer))
                before = self._previous_strong(len(self._chain) - 1)
                if before is not None:
                    self._request(before, len(self._chain) - 1)
            elif self._config.weak_agreement and known.answer is not None and self._chain:
                # Compared with the run's anchor once `_advance` reaches it.
                self._chain.append(_Link(thought=self._known, answer=known.answer, weak=True))
            self._known += 1
        return self._advance()

    def take_consistency_requests(self) -> list[ConsistencyRequest]:
        """Comparisons the controller is waiting for (each returned once)."""
        out, self._outbox = self._outbox, []
        return out

    def on_consistency(self, request: ConsistencyRequest, verdict: Verdict) -> TrimDecision | None:
        if self.decision is not None:
            return self.decision
        self._links[(request.first_thought, request.second_thought)] = verdict.positive
        return self._advance()

    # -- rules -------------------------------------------------------------------------------

    def _request(self, first: int, second: int) -> None:
        a, b = self._chain[first], self._chain[second]
        key = (a.thought, b.thought)
        if key in self._requested:
            return
        self._requested.add(key)
        self._outbox.append(
            ConsistencyRequest(
                first_thought=a.thought,
                second_thought=b.thought,
                first_answer=a.answer,
                second_answer=b.answer,
            )
        )

    def _advance(self) -> TrimDecision | None:
        """Replay the answer chain in order as far as the known comparisons allow."""
        while self._cursor < len(self._chain):
            j = self._cursor
            if j == 0:
                self._anchor, self._streak, self._cursor = 0, 0, 1
                if self._overthinking():
                    return self._fire_overthinking(0)
                continue
            anchor = self._anchor
            key = (self._chain[anchor].thought, self._chain[j].thought)
            if key not in self._links:
                self._request(anchor, j)  # a no-op for consecutive pairs (asked eagerly)
                break
            if self._chain[j].weak:
                # Agreeing: the run grows and keeps its (strong) anchor; else it is ignored.
                self._streak += self._links[key]
                self._cursor = j + 1
                if self._links[key] and self._overthinking():
                    return self._fire_overthinking(j)
                continue
            if self._links[key]:
                self._streak += 1
                self._anchor, self._cursor = j, j + 1
                if self._overthinking():
                    return self._fire_overthinking(j)
            elif (
                self._config.tolerate_one_outlier
                and not self._outlier_used
                and self._streak >= 1
                and anchor == self._previous_strong(j)
            ):
                self._outlier_used = True  # skip answer j; compare the next one to the anchor
                self._cursor = j + 1
            elif anchor != (outlier := self._previous_strong(j) or 0):
                # The answer after a skipped outlier disagrees too: restart from the outlier.
                self._anchor, self._streak, self._outlier_used, self._cursor = outlier, 0, False, j
            else:
                self._anchor, self._streak, self._outlier_used, self._cursor = j, 0, False, j + 1
        return self._check_underthinking()

    def _previous_strong(self, j: int) -> int | None:
        """Index of the last answer before chain position `j` that may anchor a run."""
        return next((i for i in range(j - 1, -1, -1) if not self._chain[i].weak), None)

    def _overthinking(self) -> bool:
        return (
            TrimRule.OVERTHINKING in self._config.rules and self._streak >= self._config.overthink_m
        )

    def _fire_overthinking(self, last: int) -> TrimDecision:
        """`last`: the chain position that completed the run (the anchor holds its answer)."""
        link, closing = self._chain[self._anchor], self._chain[last]
        outlier = " (one outlier skipped)" if self._outlier_used else ""
        reason = (
            f"{self._streak} consecutive equivalent answers {link.answer!r}{outlier}, "
            f"the last in thought {closing.thought}"
            if self._streak
            else f"concluding answer {link.answer!r} in thought {closing.thought} (M = 0)"
        )
        return self._fire(
            TrimRule.OVERTHINKING,
            reason,
            answer=link.answer,
            thought_index=closing.thought,
        )

    def _check_underthinking(self) -> TrimDecision | None:
        if self.decision is not None:
            return self.decision
        if TrimRule.UNDERTHINKING not in self._config.rules or self._streak > 0:
            return None
        if self._cursor < len(self._chain):
            return None  # a pending comparison may still show convergence
        if self._known < self._thoughts:
            return (
                None  # unjudged thoughts: no evidence yet (a verifier that is down trims nothing)
            )
        cfg = self._config
        limit = cfg.underthink_ratio * self._budget if self._budget else None
        over_budget = limit is not None and self.tokens >= limit
        too_many = (
            cfg.underthink_max_thoughts is not None
            and self._thoughts >= cfg.underthink_max_thoughts
        )
        answers = self.answers_seen
        too_many_answers = (
            cfg.underthink_max_answers is not None and answers >= cfg.underthink_max_answers
        )
        limits = [over_budget, too_many, too_many_answers]
        configured = [
            limit is not None,
            cfg.underthink_max_thoughts is not None,
            cfg.underthink_max_answers is not None,
        ]
        active = [hit for hit, on in zip(limits, configured, strict=True) if on]
        fired = (
            any(limits)
            if cfg.underthink_mode is UnderthinkMode.ANY
            else bool(active) and all(active)
        )
        if not fired:
            return None
        parts = []
        if over_budget:
            parts.append(
                f"{self.tokens} tokens >= {cfg.underthink_ratio:g} x {self._budget} budget"
            )
        if too_many:
            parts.append(f"{self._thoughts} thoughts >= {cfg.underthink_max_thoughts}")
        if too_many_answers:
            parts.append(f"{answers} answers >= {cfg.underthink_max_answers}")
        return self._fire(
            TrimRule.UNDERTHINKING,
            "no convergence after " + " and ".join(parts),
            answer=self.supported_answer,
        )

    def _fire(
        self, rule: TrimRule, reason: str, *, answer: str | None, thought_index: int | None = None
    ) -> TrimDecision:
        self.decision = TrimDecision(
            rule=rule,
            reason=reason,
            at_char=self._chars,
            at_token=self.tokens,
            answer=answer,
            thought_index=thought_index,
        )
        logger.info(
            "trim %s%s at char %d / token %d: %s",
            rule.value,
            f" [{self._name}]" if self._name else "",
            self._chars,
            self.tokens,
            reason,
        )
        return self.decision


# -- intervention ----------------------------------------------------------------------------


class InterventionConfig(BaseModel):
    """The text injected after the generated thinking when a rule fires."""

    model_config = ConfigDict(frozen=True)

    close_marker: str = Field(
        default="</think>", description="Closes the thinking block; '' for tag-less models."
    )
    answer_cue: str = Field(default="**Final Answer**", description="Cue for the answer.")
    forceful_sentence: str = Field(
        default="I have thought about this long enough; time to give the answer.",
        description="Said before closing the thinking on underthinking and loops.",
    )


def build_intervention(rule: TrimRule, config: InterventionConfig | None = None) -> str:
    """Mild for overthinking (close + cue); forceful for underthinking and loops."""
    cfg = config or InterventionConfig()
    parts = ["\n\n"]
    if rule is not TrimRule.OVERTHINKING:
        parts.append(cfg.forceful_sentence + "\n")
    if cfg.close_marker:
        parts.append(cfg.close_marker + "\n\n")
    parts.append(cfg.answer_cue + "\n\n")
    return "".join(parts)
