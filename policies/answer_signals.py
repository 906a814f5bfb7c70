"""Signals of an answer that a live service already holds: the router's stage 3 input.

Once a cheap (fast) answer exists, the question is no longer "is this problem hard?" but "does
this answer look settled?". Each signal is a named function of an :class:`AnswerView` (the
problem, the answer's text, the answer the service extracted from it, and the answers of the
cheaper modes that ran before it), listed in :data:`ANSWER_SIGNALS` in a fixed order; a model
stores the names it was fitted with. Everything here is what the service itself sees; no ground
truth, no grading.

The groups: whether the answer *reached a result* (``\\boxed``, an answer phrase, an answer at
all), how *hedged* it is ("approximately", "assuming", "not specified"), whether it *corrected
itself* ("wait", "recheck", "mistake"), its *length* against the problem's, whether its result
is just a number *copied from the problem*, whether it is *ambiguous* (several numbers in the
last sentence, several boxed results), whether a claim it makes is *refuted* by its own text (a
false arithmetic step, stated roots that do not solve their equation: ``verifiers.claims``, run by
the caller, which fills :attr:`AnswerView.refuted_claims`), and — from the second mode of a
cascade on — whether it *agrees* with the cheaper answers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_NUMBER = re.compile(r"(?<![A-Za-z_])-?\d[\d,]*(?:\.\d+)?")
_ANSWER_PHRASE = re.compile(r"\b(?:final\s+answer|answer\s*(?:is|:))", re.I)
_CONCLUSION = re.compile(r"\b(?:therefore|thus|so|hence|in total|the answer)\b", re.I)


def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + pattern + r")\b", re.I)


_HEDGES = _words(
    r"approximately|approx|roughly|about|around|assume|assuming|assumption|likely|probably"
    r"|might|perhaps|seems?|unclear|ambiguous|interpret(?:ation|ed)?|not (?:specified|given|"
    r"clear|possible)|does not specify|doesn't specify|estimate|guess"
)
_CORRECTIONS = _words(
    r"wait|actually|mistake|error|incorrect|re-?check|re-?evaluate|re-?examine|reconsider"
    r"|let'?s correct|correction|correctly|instead|however|but"
)
_APPROX_SIGN = re.compile(r"\\approx|≈|~\s*\d")


class AnswerView(BaseModel):
    """What the service knows about one answer when it decides whether to keep it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    problem: str = Field(description="The problem (the user turn) the answer is for.")
    text: str = Field(description="The answer's visible text (thinking removed).")
    answer: str | None = Field(description="The final answer the service extracted, if any.")
    thinking_chars: int = Field(0, ge=0, description="Length of the thinking part, if any.")
    earlier: tuple[str | None, ...] = Field(
        (), description="Extracted answers of the cheaper modes that ran before this one."
    )
    agrees: tuple[bool, ...] = Field(
        (), description="Whether this answer is equivalent to each of ``earlier``."
    )
    refuted_claims: tuple[str, ...] = Field(
        (), description="Claims of the text its own text refutes (``verifiers.claims``)."
    )


def _numbers(text: str) -> list[str]:
    return [_canonical_number(m) for m in _NUMBER.findall(text)]


def _canonical_number(raw: str) -> str:
    text = raw.replace(",", "")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def _final_sentence(text: str) -> str:
    paragraphs = [p for p in text.strip().split("\n") if p.strip()]
    return paragraphs[-1] if paragraphs else ""


def _result(view: AnswerView) -> str | None:
    """The result as written: the extracted answer, else the last number of the text."""
    if view.answer is not None:
        return view.answer
    numbers = _numbers(view.text)
    return numbers[-1] if numbers else None


def _result_copied_from_problem(view: AnswerView) -> float:
    result = _result(view)
    if result is None:
        return 0.0
    numbers = _numbers(result)
    return 1.0 if len(numbers) == 1 and numbers[0] in set(_numbers(view.problem)) else 0.0


def _result_not_integer(view: AnswerView) -> float:
    result = _result(view)
    if result is None:
        return 1.0
    return 0.0 if re.fullmatch(r"\s*-?\d[\d,]*(?:\.0+)?\s*", result) else 1.0


def _result_parts(view: AnswerView) -> float:
    """Results of several parts (a set, a list, a pair) have more ways to be wrong."""
    result = _result(view)
    if result is None:
        return 0.0
    depth, parts = 0, 1
    for ch in result:
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif ch == "," and depth <= 1:
            parts += 1
    return math.log(parts)


def _result_negative(view: AnswerView) -> float:
    result = _result(view)
    return 1.0 if result is not None and result.strip().startswith("-") else 0.0


def _problem_numbers_unused(view: AnswerView) -> float:
    given = set(_numbers(view.problem))
    if not given:
        return 0.0
    used = set(_numbers(view.text))
    return len(given - used) / len(given)


def _log_count(pattern: re.Pattern[str]) -> Callable[[AnswerView], float]:
    return lambda v: math.log1p(len(pattern.findall(v.text)))


def _length_ratio(view: AnswerView) -> float:
    return math.log((len(view.text) + view.thinking_chars + 1) / (len(view.problem) + 1))


def _repetition(view: AnswerView) -> float:
    """Share of repeated lines: a fast answer caught in a loop repeats itself verbatim."""
    lines = [line.strip() for line in view.text.split("\n") if len(line.strip()) > 8]
    if len(lines) < 4:
        return 0.0
    return 1.0 - len(set(lines)) / len(lines)


def _agreement(view: AnswerView) -> float:
    if not view.agrees:
        return 0.0
    return sum(view.agrees) / len(view.agrees)


def _disagrees(view: AnswerView) -> float:
    return 1.0 if view.agrees and not any(view.agrees) else 0.0


ANSWER_SIGNALS: Mapping[str, Callable[[AnswerView], float]] = MappingProxyType(
    {
        "boxed": lambda v: 1.0 if _BOXED.search(v.text) else 0.0,
        "several_boxed": lambda v: 1.0 if len(_BOXED.findall(v.text)) > 1 else 0.0,
        "answer_phrase": lambda v: 1.0 if _ANSWER_PHRASE.search(v.text) else 0.0,
        "no_answer": lambda v: 1.0 if v.answer is None else 0.0,
        "conclusion": lambda v: 1.0 if _CONCLUSION.search(_final_sentence(v.text)) else 0.0,
        "last_line_numbers": lambda v: math.log1p(len(_numbers(_final_sentence(v.text)))),
        "result_from_problem": _result_copied_from_problem,
        "result_not_integer": _result_not_integer,
        "result_negative": _result_negative,
        "result_parts": _result_parts,
        "problem_numbers_unused": _problem_numbers_unused,
        "hedges": _log_count(_HEDGES),
        "approx_sign": lambda v: 1.0 if _APPROX_SIGN.search(v.text) else 0.0,
        "self_corrections": _log_count(_CORRECTIONS),
        "log_chars": lambda v: math.log1p(len(v.text) + v.thinking_chars),
        "length_ratio": _length_ratio,
        "repetition": _repetition,
        "claims_refuted": lambda v: 1.0 if v.refuted_claims else 0.0,
        "agreement": _agreement,
        "disagrees_with_all": _disagrees,
    }
)
"""Signal name → function of an :class:`AnswerView`, in the canonical order."""

ANSWER_SIGNAL_NAMES: tuple[str, ...] = tuple(ANSWER_SIGNALS)


def answer_signals(view: AnswerView) -> dict[str, float]:
    """Every signal of :data:`ANSWER_SIGNALS` for one answer."""
    return {name: fn(view) for name, fn in ANSWER_SIGNALS.items()}


def signal_vector(values: Mapping[str, float], names: Sequence[str]) -> np.ndarray:
    """Values in the order of ``names``; KeyError naming the signals that are missing."""
    missing = [n for n in names if n not in values]
    if missing:
        raise KeyError(f"unknown signals {missing}; known: {sorted(values)}")
    return np.array([values[n] for n in names], dtype=float)
