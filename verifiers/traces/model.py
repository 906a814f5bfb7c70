"""One recorded generation (the ``evals/data/traces`` JSONL format) and where its thinking ends.

Depending on how a file was exported, scalar values may be native JSON (``true``,
``["<think>", "</think>"]``) or Python reprs in strings (``"True"``, ``"['<think>', '</think>']"``,
``"None"``); :class:`Trace` accepts both.

Where the thinking ends (``Trace.split``), by the record's own delimiters and one fallback rule:

* ``MARKER`` - the close marker (``</think>``, ``<|end_of_thought|>``) occurs in the output:
  thinking is the text before it (after the open marker when the output starts with one), the
  answer section is everything after it.
* ``FINAL_ANSWER_HEADING`` - the fallback: no close marker, but the output has a
  ``**Final Answer**`` heading (tag-less Sky-T1 traces, LIMO): thinking is the text before the
  *last* such heading, the answer section starts at the heading and includes it.
* ``UNCLOSED`` - the record names thinking delimiters but neither rule applies: the whole output
  is thinking and the answer section is empty (mostly traces cut off by the token cap).
* ``NO_THINKING`` - the record names no delimiters (``null``: a model without a thinking part,
  such as Qwen2.5-32B-Instruct) and has no heading: the whole output is the answer section.
"""

from __future__ import annotations

import ast
import enum
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr

from verifiers.answers import extract_final_answer

__all__ = ["ThinkingSplit", "Trace", "TraceFormatError"]

_FINAL_ANSWER_HEADING = re.compile(r"\*\*Final Answer:?\*\*:?")
_LEVEL_NUMBER = re.compile(r"(\d+)")


class TraceFormatError(ValueError):
    """A trace file is missing or a row does not parse (the message names file and line)."""


def _literal(value: Any) -> Any:
    """Decode a Python-repr string (``"True"``, ``"['a', 'b']"``, ``"None"``); pass others."""
    if isinstance(value, str):
        text = value.strip()
        if text in {"True", "False", "None"} or text[:1] in {"[", "(", "{"}:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return value
    return value


def _none_literal(value: Any) -> Any:
    return None if value is None or (isinstance(value, str) and value.strip() == "None") else value


def _level(value: Any) -> Any:
    """``5``, ``"5"``, ``"Level 5"`` -> 5; ``None`` / ``"None"`` / ``"Level ?"`` -> None."""
    value = _none_literal(value)
    if isinstance(value, str):
        found = _LEVEL_NUMBER.search(value)
        return int(found.group(1)) if found else None
    return value


Flag = Annotated[bool, BeforeValidator(_literal)]
RecordDict = Annotated[dict[str, Any], BeforeValidator(lambda v: _literal(v) or {})]
OptionalText = Annotated[str | None, BeforeValidator(_none_literal)]


class ThinkingSplit(enum.StrEnum):
    """How a trace's output was divided into thinking and answer (see the module docstring)."""

    MARKER = "marker"
    FINAL_ANSWER_HEADING = "final_answer_heading"
    UNCLOSED = "unclosed"
    NO_THINKING = "no_thinking"


class Trace(BaseModel):
    """One recorded generation on a math problem with a known answer."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(..., description="`<dataset>/<index>:<official id or model>`; unique per file.")
    problem_id: OptionalText = Field(
        None, description="The same for every model on a problem (`mip_*` files, sample banks)."
    )
    dataset: str = ""
    model: str = Field(..., description="The model that wrote the trace.")
    problem: str
    ground_truth: str
    ground_truth_normalized: OptionalText = None
    output: str = Field(..., description="The full recorded generation, thinking included.")
    final_answer: OptionalText = Field(
        None, description="The source's own extraction (grading only; unreliable when cut off)."
    )
    is_correct: Flag = Field(..., description="The source's label (grading only).")
    thinking_delimiters: Annotated[tuple[str, str] | None, BeforeValidator(_literal)] = Field(
        None, description="Open/close markers; None: the model has no thinking part."
    )
    prompt_ends_with_think_tag: Flag = False
    has_thinking_end: Flag = False
    complete: Flag = Field(True, description="False: the recording was cut off by the token cap.")
    prompt: OptionalText = Field(None, description="The recorded raw prompt, if kept.")
    level: Annotated[int | None, BeforeValidator(_level)] = None
    subject: OptionalText = None
    generation: RecordDict = Field(default_factory=dict, description="Decoding settings.")
    source: Annotated[Any, BeforeValidator(_literal)] = Field(None, description="Provenance.")
    notes: str = ""

    _thinking_start: int = PrivateAttr(0)
    _thinking_end: int = PrivateAttr(0)
    _answer_start: int = PrivateAttr(0)
    _split: ThinkingSplit = PrivateAttr(ThinkingSplit.UNCLOSED)

    def model_post_init(self, context: Any, /) -> None:
        out, open_marker, close_marker = self.output, self.think_open, self.think_close
        start = len(open_marker) if open_marker and out.startswith(open_marker) else 0
        close_at = out.find(close_marker, start) if close_marker else -1
        headings = list(_FINAL_ANSWER_HEADING.finditer(out, start)) if close_at < 0 else []
        if close_at >= 0:
            self._split = ThinkingSplit.MARKER
            self._thinking_end, self._answer_start = close_at, close_at + len(close_marker)
        elif headings:
            self._split = ThinkingSplit.FINAL_ANSWER_HEADING
            self._thinking_end = self._answer_start = headings[-1].start()
        elif self.thinking_delimiters is None:
            self._split = ThinkingSplit.NO_THINKING
            self._thinking_end = self._answer_start = start
        else:
            self._split = ThinkingSplit.UNCLOSED
            self._thinking_end = self._answer_start = len(out)
        self._thinking_start = start

    # -- identity ----------------------------------------------------------------------------
    @property
    def problem_key(self) -> str:
        """Groups the samples of one problem: `problem_id`, else the id before its ``:``."""
        return self.problem_id or self.id.split(":", 1)[0]

    # -- markers -----------------------------------------------------------------------------
    @property
    def think_open(self) -> str:
        return self.thinking_delimiters[0] if self.thinking_delimiters else ""

    @property
    def think_close(self) -> str:
        return self.thinking_delimiters[1] if self.thinking_delimiters else ""

    # -- the split ---------------------------------------------------------------------------
    @property
    def split(self) -> ThinkingSplit:
        return self._split

    @property
    def thinking_start(self) -> int:
        """Offset in `output` where the thinking text begins (after a leading open marker)."""
        return self._thinking_start

    @property
    def thinking_end(self) -> int:
        """Offset in `output` where thinking ends (the close marker, heading, or the end)."""
        return self._thinking_end

    @property
    def answer_start(self) -> int:
        """Offset in `output` of the answer section (after the close marker)."""
        return self._answer_start

    @property
    def thinking_text(self) -> str:
        return self.output[self._thinking_start : self._thinking_end]

    @property
    def answer_text(self) -> str:
        """The recorded post-thinking section ('' when the trace has none)."""
        return self.output[self._answer_start :]

    @property
    def has_answer_section(self) -> bool:
        return bool(self.answer_text.strip())

    @property
    def answer(self) -> str | None:
        """The final answer as the service extracts it from the text (a live system sees this):
        from the answer section, else (no answer section) from the end of the thinking."""
        answer = self.answer_text
        if answer.strip():
            return extract_final_answer(answer)
        return extract_final_answer(self.thinking_text)

    @property
    def token_budget(self) -> int | None:
        """The recording's max tokens, when its decoding settings name one."""
        budget = self.generation.get("max_tokens") or self.generation.get("max_tokens_per_call")
        return int(budget) if budget else None
