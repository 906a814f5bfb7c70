"""Split a chain of thought into *thoughts* at reflection markers, batch or on a stream.

A thought boundary is the start of a paragraph (the first non-blank character after a blank
line) that opens with one of the model family's reflection markers ("Wait", "Alternatively",
"Let me double-check", ...), followed by a non-word character. The text between two boundaries is
one thought; every character of the input belongs to exactly one thought, so the thoughts'
texts concatenate back to the input.

`ThoughtSegmenter` is incremental: it decides a boundary only once it has seen enough characters
after a paragraph break to match the longest marker plus its word boundary, so feeding the text
in any chunking yields exactly the thoughts `segment()` yields on the whole text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_FAMILY",
    "MARKERS_BY_FAMILY",
    "SegmenterConfig",
    "Thought",
    "ThoughtSegmenter",
    "segment",
]

_COMMON_MARKERS: tuple[str, ...] = (
    "Wait",
    "But",
    "Alternatively",
    "Hmm",
    "However",
    "Actually",
    "Let me double-check",
    "Let me double check",
    "Let me verify",
    "Let me check",
    "Let me confirm",
    "Let me re-examine",
    "Let me reconsider",
    "Let me think again",
    "Double-checking",
    "To double-check",
    "To verify",
    "To confirm",
    "Another way",
    "Another approach",
    "On second thought",
    "Oh",
)

MARKERS_BY_FAMILY: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "generic": _COMMON_MARKERS,
        # R1 and its distills reflect with "Wait"/"Hmm"/"Alternatively" and re-verify with
        # "Let me check"; "Okay, so" opens a fresh attempt after a dead end.
        "deepseek_r1": (*_COMMON_MARKERS, "Okay, so", "Let me recap"),
        "qwq": (*_COMMON_MARKERS, "Let me see", "Let me try another"),
        "qwen3": (*_COMMON_MARKERS, "Let me recap"),
        "openpangu": _COMMON_MARKERS,
        # Sky-T1 (QwQ-preview style demonstrations) says "Maybe I" / "Perhaps I" to back off.
        "sky_t1": (*_COMMON_MARKERS, "Maybe I", "Perhaps I", "Just to"),
    }
)
DEFAULT_FAMILY = "generic"


class SegmenterConfig(BaseModel):
    """Which reflection markers open a new thought."""

    model_config = ConfigDict(frozen=True)

    family: str = Field(
        default=DEFAULT_FAMILY,
        description="Model family whose marker list is used; unknown families use the default.",
    )
    markers: tuple[str, ...] | None = Field(
        default=None,
        description="Explicit marker list; overrides the family's list when given.",
    )
    case_sensitive: bool = Field(
        default=True,
        description="Match markers case-sensitively (reflections start a paragraph capitalised).",
    )
    paragraphs: bool = Field(
        default=False,
        description="Every paragraph is a thought (finer cut points); markers are still recorded.",
    )

    @model_validator(mode="after")
    def _markers_not_blank(self) -> SegmenterConfig:
        if self.markers is not None and any(not m.strip() for m in self.markers):
            raise ValueError("markers must be non-blank strings")
        return self

    def resolved_markers(self) -> tuple[str, ...]:
        if self.markers is not None:
            return self.markers
        return MARKERS_BY_FAMILY.get(self.family, MARKERS_BY_FAMILY[DEFAULT_FAMILY])


class Thought(BaseModel):
    """One closed thought: a span of the thinking text."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(description="0-based position of the thought in the chain.")
    start: int = Field(description="Offset of the first character in the thinking text.")
    end: int = Field(description="Offset one past the last character in the thinking text.")
    text: str = Field(description="The thought's text, trailing blank lines included.")
    marker: str | None = Field(
        default=None, description="The reflection marker that opened it (None for the first)."
    )
    next_marker: str | None = Field(
        default=None,
        description="The reflection marker that opens the next thought or paragraph, when one "
        "does (known when this one closes): a paragraph followed by one ends a thought.",
    )


# A paragraph break: a newline, optional horizontal space, another newline, then any whitespace.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")


class ThoughtSegmenter:
    """Incremental segmenter: `feed()` deltas, then `finish()`; or call `segment()` once."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self._config = config or SegmenterConfig()
        markers = sorted(set(self._config.resolved_markers()), key=len, reverse=True)
        flags = 0 if self._config.case_sensitive else re.IGNORECASE
        alternation = "|".join(re.escape(m) for m in markers)
        self._marker_re = re.compile(rf"(?:{alternation})(?!\w)", flags)
        self._paragraphs = self._config.paragraphs
        # Enough look-ahead to decide any marker and its trailing word boundary.
        self._lookahead = max(len(m) for m in markers) + 1
        self._buffer = ""  # text of the open thought (from its start) plus undecided tail
        self._buffer_start = 0  # offset of the buffer in the whole text
        self._scan_from = 0  # buffer position from which breaks are still undecided
        self._open_marker: str | None = None
        self._index = 0
        self._finished = False

    @property
    def config(self) -> SegmenterConfig:
        return self._config

    @property
    def consumed_chars(self) -> int:
        """Characters fed so far."""
        return self._buffer_start + len(self._buffer)

    def feed(self, delta: str) -> list[Thought]:
        """Append streamed text; return the thoughts this delta closed."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._buffer += delta
        return self._drain(final=False)

    def finish(self) -> list[Thought]:
        """End of stream: close every remaining thought."""
        if self._finished:
            return []
        closed = self._drain(final=True)
        self._finished = True
        if self._buffer:
            closed.append(self._close(len(self._buffer), next_marker=None))
        return closed

    def _drain(self, *, final: bool) -> list[Thought]:
        closed: list[Thought] = []
        while True:
            brk = _PARAGRAPH_BREAK.search(self._buffer, self._scan_from)
            if brk is None:
                # Keep a trailing "\n" (+ spaces) undecided: the next chunk may complete a break.
                last_nl = self._buffer.rfind("\n", self._scan_from)
                self._scan_from = last_nl if last_nl >= 0 else len(self._buffer)
                return closed
            start = brk.end()
            if start == len(self._buffer) and not final:
                self._scan_from = brk.start()  # whitespace may continue in the next chunk
                return closed
            if len(self._buffer) - start < self._lookahead and not final:
                self._scan_from = brk.start()
                return closed
            match = self._marker_re.match(self._buffer, start)
            if match is None and not self._paragraphs:
                self._scan_from = start  # a break match spans >= 2 characters: progress
                continue
            closed.append(self._close(start, next_marker=match.group(0) if match else None))

    def _close(self, cut: int, *, next_marker: str | None) -> Thought:
        text = self._buffer[:cut]
        thought = Thought(
            index=self._index,
            start=self._buffer_start,
            end=self._buffer_start + cut,
            text=text,
            marker=self._open_marker,
            next_marker=next_marker,
        )
        self._index += 1
        self._buffer = self._buffer[cut:]
        self._buffer_start += cut
        self._scan_from = 0
        self._open_marker = next_marker
        return thought


def segment(text: str, config: SegmenterConfig | None = None) -> list[Thought]:
    """Batch segmentation; identical to streaming the same text in any chunking."""
    segmenter = ThoughtSegmenter(config)
    return [*segmenter.feed(text), *segmenter.finish()]
