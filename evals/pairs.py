"""Recorded fast / slow answers to the same problems, joined by ``problem_id``.

A *ladder* is one problem set answered by several modes, cheapest first: level 0 is the fast
answer (no thinking), the later levels are thinkers from the shortest to the deepest. The files
are the ``mip_*`` JSONL traces of ``../shared/traces`` (README there): one record per problem
with ``problem_id``, ``problem``, ``output``, ``is_correct`` and the thinking markers.

Each record is read by the shared trace model (:class:`verifiers.traces.Trace`: its own
thinking delimiters, one fallback rule). What a live service would see of each answer — its
visible text, the final answer extracted from it, its length in Qwen2.5 tokens (the tokenizer of
QwQ, R1-Distill-Qwen and Qwen2.5-Instruct alike) — is computed with the service's own extractor;
the records' ``is_correct`` is kept apart, as the label that grades and trains.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from verifiers.answers import extract_final_answer, normalize_answer
from verifiers.equivalence import verify_pair
from verifiers.traces import QWEN25_TOKENIZER, TokenCounter, Trace

TOKENS_NOTE = f"tokens counted by {QWEN25_TOKENIZER}"


@functools.cache
def _counter() -> TokenCounter:
    return TokenCounter.qwen25()


def count_tokens(text: str) -> int:
    """Qwen2.5 tokens of a recorded text."""
    return _counter().count(text)


class PairDataError(ValueError):
    """Pair files that cannot be joined (unreadable, mismatched problems, no overlap)."""


class RecordedAnswer(BaseModel):
    """One mode's recorded answer to a problem: what a service would see, and its label."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    text: str = Field(description="The visible answer (after the thinking).")
    thinking_chars: int = Field(ge=0)
    tokens: int = Field(ge=0, description="Tokens of the whole output (thinking included).")
    answer: str | None = Field(description="The final answer the service extracts.")
    correct: bool = Field(description="The record's grade: a label, never a decision input.")


def cut_answer(answer: RecordedAnswer, max_tokens: int) -> RecordedAnswer:
    """What a probe capped at ``max_tokens`` would have seen of a no-thinking ``answer``.

    A live probe stops at its cap: the service reads the first ``max_tokens`` tokens of the text
    and pays for those. The cut answer is graded right only when it still extracts the answer
    of the whole (right) record.
    """
    if answer.tokens <= max_tokens:
        return answer
    if answer.thinking_chars:
        raise ValueError(f"{answer.model}: only an answer without thinking can be cut")
    text = answer.text[: _counter().prefix_chars(answer.text, max_tokens)]
    extracted = extract_final_answer(text)
    return answer.model_copy(
        update={
            "text": text,
            "tokens": max_tokens,
            "answer": extracted,
            "correct": answer.correct and extracted is not None and extracted == answer.answer,
        }
    )


class LadderProblem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    problem_id: str
    problem: str
    answers: tuple[RecordedAnswer, ...] = Field(description="One per level, cheapest first.")


class Ladder(BaseModel):
    """Problems answered at every level, in ``problem_id`` order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: tuple[str, ...] = Field(description="Model name per level, cheapest first.")
    files: tuple[str, ...]
    problems: tuple[LadderProblem, ...]
    dropped: int = Field(0, description="Problems not present in every file.")

    def only(self, problem_ids: Sequence[str]) -> Ladder:
        """The same ladder restricted to ``problem_ids``."""
        wanted = set(problem_ids)
        return self.model_copy(
            update={"problems": tuple(p for p in self.problems if p.problem_id in wanted)}
        )


_REQUIRED = ("problem_id", "problem", "output", "is_correct")


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PairDataError(f"cannot read {path}: {exc}") from exc
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairDataError(f"{path}:{number}: not JSON ({exc})") from exc
        missing = [k for k in _REQUIRED if not isinstance(row, dict) or k not in row]
        if missing:
            raise PairDataError(f"{path}:{number}: not a pair record, missing {missing}")
        pid, problem = str(row["problem_id"]), str(row["problem"])
        if pid in rows:
            raise PairDataError(f"{path}:{number}: problem_id {pid!r} occurs twice")
        rows[pid] = row | {"problem": problem}
    if not rows:
        raise PairDataError(f"{path}: no records")
    return rows


def _answer(row: dict[str, Any], path: Path) -> RecordedAnswer:
    try:
        trace = Trace.model_validate({"id": row["problem_id"], "ground_truth": "", **row})
    except ValidationError as exc:
        raise PairDataError(f"{path}: record {row['problem_id']!r} is not a trace: {exc}") from exc
    visible = trace.answer_text
    return RecordedAnswer(
        model=trace.model,
        text=visible,
        thinking_chars=len(trace.thinking_text),
        tokens=count_tokens(trace.output),
        answer=extract_final_answer(visible),
        correct=trace.is_correct,
    )


def load_ladder(fast: Path, slow: Sequence[Path]) -> Ladder:
    """Join the fast file and the thinker files (cheapest first) on ``problem_id``.

    PairDataError naming the files when a problem's text differs between them or when no
    problem is in all of them.
    """
    if not slow:
        raise PairDataError("need at least one slow file")
    paths = [fast, *slow]
    tables = [_read(p) for p in paths]
    shared = set(tables[0]).intersection(*tables[1:])
    if not shared:
        names = ", ".join(str(p) for p in paths)
        raise PairDataError(f"no problem_id occurs in every file ({names})")
    for path, table in zip(paths[1:], tables[1:], strict=True):
        for pid in sorted(shared):
            if table[pid]["problem"].strip() != tables[0][pid]["problem"].strip():
                raise PairDataError(
                    f"problem {pid!r} has a different text in {path} than in {fast}: "
                    "the files are not answers to the same problems"
                )
    problems = tuple(
        LadderProblem(
            problem_id=pid,
            problem=tables[0][pid]["problem"],
            answers=tuple(_answer(t[pid], p) for t, p in zip(tables, paths, strict=True)),
        )
        for pid in sorted(shared)
    )
    union = set().union(*tables)
    return Ladder(
        levels=tuple(a.model for a in problems[0].answers),
        files=tuple(str(p) for p in paths),
        problems=problems,
        dropped=len(union) - len(shared),
    )


def same_answer(a: str | None, b: str | None) -> bool:
    """Whether two extracted answers are equivalent (the service's equivalence check)."""
    if a is None or b is None:
        return False
    if normalize_answer(a) == normalize_answer(b):
        return True
    try:
        return verify_pair(a, b)
    except Exception:  # an unparseable pair is simply not the same answer
        return False
