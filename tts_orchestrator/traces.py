"""Recorded reasoning traces (the ``../shared/traces`` JSONL format) as typed models.

One JSON object per line. Depending on how a file was exported, scalar values may be native JSON
(``true``, ``["<think>", "</think>"]``) or Python reprs in strings (``"True"``,
``"['<think>', '</think>']"``, ``"None"``); :class:`Trace` accepts both.

Where the thinking ends (``Trace.split``):

* ``MARKER`` - the close marker (``</think>``, ``<|end_of_thought|>``) occurs in the output:
  thinking is the text before it (after the open marker when the output starts with one), the
  answer section is everything after it.
* ``FINAL_ANSWER_HEADING`` - no close marker, but the output has a ``**Final Answer**`` heading
  (tag-less Sky-T1 traces write their conclusion under one): thinking is the text before the
  *last* such heading, the answer section starts at the heading and includes it.
* ``NONE`` - neither: the whole output is thinking and the answer section is empty (most of
  these traces were cut off by the token cap, ``complete == False``).
"""

from __future__ import annotations

import ast
import enum
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError

from tts_orchestrator.exceptions import ConfigError

__all__ = ["ThinkingSplit", "Trace", "load_traces"]

_FINAL_ANSWER_HEADING = re.compile(r"\*\*Final Answer:?\*\*:?")
_LEVEL_NUMBER = re.compile(r"(\d+)")


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
RecordDict = Annotated[dict[str, Any], BeforeValidator(_literal)]
OptionalText = Annotated[str | None, BeforeValidator(_none_literal)]


class ThinkingSplit(enum.StrEnum):
    """How a trace's output was divided into thinking and answer (see the module docstring)."""

    MARKER = "marker"
    FINAL_ANSWER_HEADING = "final_answer_heading"
    NONE = "none"


class Trace(BaseModel):
    """One recorded generation on a math problem with a known answer."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(..., description="`<dataset>/<index>:<official id>`; unique per file.")
    dataset: str
    model: str = Field(..., description="The model that wrote the trace.")
    problem: str
    ground_truth: str
    ground_truth_normalized: OptionalText = None
    output: str = Field(..., description="The full recorded generation, thinking included.")
    final_answer: str = Field("", description="The source harness's extraction (unreliable).")
    is_correct: Flag
    thinking_delimiters: Annotated[tuple[str, str], BeforeValidator(_literal)]
    prompt_ends_with_think_tag: Flag = False
    has_thinking_end: Flag = False
    complete: Flag = Field(..., description="False: the recording was cut off by the token cap.")
    prompt: OptionalText = Field(
        None, description="The recorded raw prompt, if the source kept it."
    )
    level: Annotated[int | None, BeforeValidator(_level)] = None
    subject: OptionalText = None
    generation: RecordDict = Field(default_factory=dict, description="Decoding settings.")
    source: RecordDict = Field(default_factory=dict, description="Provenance.")
    notes: str = ""

    _thinking_start: int = PrivateAttr(0)
    _thinking_end: int = PrivateAttr(0)
    _answer_start: int = PrivateAttr(0)
    _split: ThinkingSplit = PrivateAttr(ThinkingSplit.NONE)

    def model_post_init(self, context: Any, /) -> None:
        out, open_marker, close_marker = self.output, self.think_open, self.think_close
        start = len(open_marker) if open_marker and out.startswith(open_marker) else 0
        close_at = out.find(close_marker, start) if close_marker else -1
        if close_at >= 0:
            self._split = ThinkingSplit.MARKER
            self._thinking_end, self._answer_start = close_at, close_at + len(close_marker)
        else:
            headings = list(_FINAL_ANSWER_HEADING.finditer(out, start))
            if headings:
                self._split = ThinkingSplit.FINAL_ANSWER_HEADING
                self._thinking_end = self._answer_start = headings[-1].start()
            else:
                self._split = ThinkingSplit.NONE
                self._thinking_end = self._answer_start = len(out)
        self._thinking_start = start

    # -- markers -----------------------------------------------------------------------------
    @property
    def think_open(self) -> str:
        return self.thinking_delimiters[0]

    @property
    def think_close(self) -> str:
        return self.thinking_delimiters[1]

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


def load_traces(paths: Iterable[str | Path]) -> list[Trace]:
    """Parse JSONL trace files, in the given order; blank lines are skipped.

    Raises ConfigError naming the file (and line) when a file is missing or a row is invalid.
    """
    traces: list[Trace] = []
    for path in map(Path, paths):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read trace file {path}: {exc}") from exc
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                traces.append(Trace.model_validate(json.loads(line)))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise ConfigError(f"invalid trace at {path}:{number}: {exc}") from exc
    return traces
