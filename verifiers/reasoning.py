"""Split generated text into thinking (`reasoning_content`) and answer (`content`).

`ReasoningSplitter` works incrementally on a stream and gives the same result as the batch
`split_reasoning` whatever the chunking: a marker cut across two chunks is held back until it
can be decided.
"""

from __future__ import annotations

import enum

from verifiers.families import ModelFamily


class _State(enum.Enum):
    START = "start"
    THINKING = "thinking"
    CONTENT = "content"


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ReasoningSplitter:
    """Feed deltas; get (reasoning delta, content delta) back."""

    def __init__(self, family: ModelFamily, *, in_thinking: bool | None = None) -> None:
        self.family = family
        if not family.has_markers:
            self._state = _State.CONTENT
        elif in_thinking is not None:
            self._state = _State.THINKING if in_thinking else _State.START
        else:
            self._state = _State.THINKING if family.starts_in_thinking else _State.START
        self._buf = ""
        self.thinking_closed = False

    @property
    def in_thinking(self) -> bool:
        return self._state is _State.THINKING

    def feed(self, delta: str) -> tuple[str, str]:
        self._buf += delta
        reasoning, content = [], []
        while self._buf:
            if self._state is _State.CONTENT:
                content.append(self._buf)
                self._buf = ""
            elif self._state is _State.START:
                assert self.family.think_open is not None
                head = self._buf.lstrip()
                if head.startswith(self.family.think_open):
                    self._buf = head[len(self.family.think_open) :]
                    self._state = _State.THINKING
                elif self.family.think_open.startswith(head):
                    break  # could still become the opening marker
                else:
                    self._state = _State.CONTENT
            else:
                assert self.family.think_close is not None
                close = self.family.think_close
                at = self._buf.find(close)
                if at >= 0:
                    reasoning.append(self._buf[:at])
                    self._buf = self._buf[at + len(close) :]
                    self._state = _State.CONTENT
                    self.thinking_closed = True
                    continue
                keep = _partial_suffix(self._buf, close)
                reasoning.append(self._buf[: len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep :]
                break
        return "".join(reasoning), "".join(content)

    def finish(self) -> tuple[str, str]:
        """Flush what was held back at the end of the stream."""
        rest, self._buf = self._buf, ""
        if self._state is _State.THINKING:
            return rest, ""
        return "", rest


def split_reasoning(text: str, family: ModelFamily) -> tuple[str, str]:
    """Batch version: (reasoning, content) of a whole generation."""
    splitter = ReasoningSplitter(family)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    return r1 + r2, c1 + c2
