"""Grading one model output against a gold answer, with two graders side by side.

Pipeline: strip the thinking block → extract the final answer (boxed first, see
`verifiers.answers`) → math-verify verdict (the one that counts) and the lenient Qwen-style
verdict (`verifiers.normalized_match`), both in worker processes under our own timeout. Every
disagreement is logged with both verdicts so graders can be audited on real outputs.

An output with no extractable answer is wrong under both graders. An output whose thinking was
opened but never closed (cut off by the token cap) has no answer: answers written inside the
thinking are not graded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from pydantic import BaseModel, Field

from verifiers.answers import extract_final_answer, strip_thinking
from verifiers.equivalence import EquivalenceChecker, EquivalenceVerdict
from verifiers.normalized_match import qwen_style_equal

__all__ = ["DEFAULT_THINKING_MARKERS", "GradeResult", "Grader", "strip_reasoning"]

logger = logging.getLogger(__name__)

DEFAULT_THINKING_MARKERS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("<|begin_of_thought|>", "<|end_of_thought|>"),
)
"""(open, close) pairs tried in order; a `ModelFamily`'s `(think_open, think_close)` fits here."""


def strip_reasoning(
    output: str, markers: Sequence[tuple[str, str]] = DEFAULT_THINKING_MARKERS
) -> str:
    """The answer part of `output`: after the first marker pair whose close marker occurs.

    No close marker: `""` if some open marker occurs (unfinished thinking), else the whole text.
    """
    for open_marker, close_marker in markers:
        if close_marker in output:
            return strip_thinking(output, open_marker=open_marker, close_marker=close_marker)
    if any(open_marker in output for open_marker, _ in markers):
        return ""
    return output


class GradeResult(BaseModel):
    """The grade of one output, with the evidence needed to audit it."""

    gold: str = Field(description="The reference answer.")
    extracted: str | None = Field(description="The answer found in the output; None if none.")
    verdict: bool = Field(description="math-verify: the extracted answer equals the gold one.")
    alt_verdict: bool = Field(description="The lenient Qwen-style normalise-and-compare verdict.")
    disagreement: bool = Field(description="verdict != alt_verdict.")
    timed_out: bool = Field(description="A comparison overran the timeout (counted as wrong).")


class Grader:
    """Grades outputs; usable from the event loop (`grade`) or from any thread (`grade_sync`).

    By default it owns two checkers (math-verify and the Qwen-style comparison), each with its
    own worker process, and closes them in `close()`. Pass checkers to share pools; they are
    then left open.
    """

    def __init__(
        self,
        *,
        checker: EquivalenceChecker | None = None,
        alt_checker: EquivalenceChecker | None = None,
        thinking_markers: Sequence[tuple[str, str]] = DEFAULT_THINKING_MARKERS,
        timeout_s: float = 3.0,
    ) -> None:
        self._owned: list[EquivalenceChecker] = []
        if checker is None:
            checker = EquivalenceChecker(timeout_s=timeout_s)
            self._owned.append(checker)
        if alt_checker is None:
            alt_checker = EquivalenceChecker(timeout_s=timeout_s, verify_fn=qwen_style_equal)
            self._owned.append(alt_checker)
        self.checker = checker
        self.alt_checker = alt_checker
        self.thinking_markers = tuple(thinking_markers)

    def answer_of(self, output: str) -> str | None:
        """The final answer written after the thinking, or None."""
        return extract_final_answer(strip_reasoning(output, self.thinking_markers))

    async def grade(self, output: str, gold: str) -> GradeResult:
        extracted = self.answer_of(output)
        if extracted is None:
            return self._result(gold, None, None, None)
        main, alt = await asyncio.gather(
            self.checker.check(gold, extracted), self.alt_checker.check(gold, extracted)
        )
        return self._result(gold, extracted, main, alt)

    def grade_sync(self, output: str, gold: str) -> GradeResult:
        """Blocking form of `grade`; safe from worker threads (no signals are used)."""
        extracted = self.answer_of(output)
        if extracted is None:
            return self._result(gold, None, None, None)
        main = self.checker.check_sync(gold, extracted)
        alt = self.alt_checker.check_sync(gold, extracted)
        return self._result(gold, extracted, main, alt)

    async def grade_many(self, items: Sequence[tuple[str, str]]) -> list[GradeResult]:
        """Grades of many (output, gold) pairs, concurrently."""
        return list(await asyncio.gather(*(self.grade(o, g) for o, g in items)))

    @staticmethod
    def _result(
        gold: str,
        extracted: str | None,
        main: EquivalenceVerdict | None,
        alt: EquivalenceVerdict | None,
    ) -> GradeResult:
        verdict = main is not None and main.equivalent
        alt_verdict = alt is not None and alt.equivalent
        result = GradeResult(
            gold=gold,
            extracted=extracted,
            verdict=verdict,
            alt_verdict=alt_verdict,
            disagreement=verdict != alt_verdict,
            timed_out=(main is not None and main.timed_out) or (alt is not None and alt.timed_out),
        )
        if result.disagreement:
            logger.info(
                "graders disagree: gold=%r extracted=%r math_verify=%s qwen_style=%s",
                gold,
                extracted,
                verdict,
                alt_verdict,
            )
        return result

    def close(self) -> None:
        for checker in self._owned:
            checker.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)
