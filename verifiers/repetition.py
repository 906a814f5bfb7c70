"""Loop detection on a token stream with a rolling hash over recent n-grams, plus the word-piece
tokenizer the trimming code uses to count tokens without a model tokenizer.

Word pieces approximate a BPE tokenizer's count on math text: a run of letters is one piece,
every digit is one piece (Qwen/Llama-3 tokenizers split numbers into digits or short groups),
and every other non-space character is one piece (LaTeX backslashes, braces, operators). On the
development traces this lands within ~20% of real token counts, and savings are reported as
ratios, which the approximation barely moves.

`RepetitionDetector` keeps a Rabin-Karp hash of the last `ngram` pieces, updated in O(1) per
piece, and a count of each n-gram hash over the last `window` pieces. A loop is reported when the
n-gram just completed has occurred `threshold` times inside the window. Math text legitimately
repeats formulas (a 24-piece n-gram recurs four or more times in a fifth of the complete
development traces), but a 48-piece run recurring five times within 3000 pieces occurs in none
of the 472 complete traces and in a quarter of the traces cut off by the token cap, which loop.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter, deque

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "RepetitionConfig",
    "RepetitionDetector",
    "RepetitionHit",
    "WordPieceStream",
    "count_word_pieces",
    "word_pieces",
]

_PIECE = re.compile(r"[^\W\d_]+|\d|[^\w\s]|_")
_MOD = (1 << 61) - 1
_BASE = 1_000_003


def word_pieces(text: str) -> list[str]:
    """Approximate tokens of `text` (see the module docstring)."""
    return _PIECE.findall(text)


def count_word_pieces(text: str) -> int:
    return sum(1 for _ in _PIECE.finditer(text))


class WordPieceStream:
    """Incremental `word_pieces`: the same pieces whatever the chunking.

    A trailing run of letters is held back until a non-letter arrives, because the next chunk
    may continue the word.
    """

    def __init__(self) -> None:
        self._pending = ""
        self.count = 0

    def feed(self, delta: str) -> list[str]:
        text = self._pending + delta
        tail = re.search(r"[^\W\d_]+$", text)
        cut = tail.start() if tail else len(text)
        self._pending = text[cut:]
        pieces = word_pieces(text[:cut])
        self.count += len(pieces)
        return pieces

    def finish(self) -> list[str]:
        pieces = word_pieces(self._pending)
        self._pending = ""
        self.count += len(pieces)
        return pieces


class RepetitionConfig(BaseModel):
    """Thresholds of the loop detector."""

    model_config = ConfigDict(frozen=True)

    ngram: int = Field(default=48, ge=2, description="Pieces per hashed n-gram.")
    window: int = Field(default=3000, ge=8, description="Recent pieces an n-gram is counted over.")
    threshold: int = Field(
        default=5, ge=2, description="Occurrences of one n-gram inside the window that mean a loop."
    )


class RepetitionHit(BaseModel):
    """A detected loop."""

    model_config = ConfigDict(frozen=True)

    at_piece: int = Field(description="Pieces consumed when the loop was detected.")
    occurrences: int = Field(description="Times the repeating n-gram occurred in the window.")
    ngram_text: str = Field(description="The repeating n-gram, pieces joined by spaces.")


def _piece_hash(piece: str) -> int:
    # crc32 is stable across processes, unlike hash(); +1 keeps every piece non-zero.
    return zlib.crc32(piece.encode("utf-8")) + 1


class RepetitionDetector:
    """Feed text deltas; `feed` returns a hit once the stream loops (and keeps returning it)."""

    def __init__(self, config: RepetitionConfig | None = None) -> None:
        self._config = config or RepetitionConfig()
        self._stream = WordPieceStream()
        self._recent: deque[str] = deque(maxlen=self._config.ngram)
        self._hashes: deque[int] = deque()  # n-gram hashes in the window, oldest first
        self._counts: Counter[int] = Counter()
        self._rolling = 0
        self._drop_factor = pow(_BASE, self._config.ngram - 1, _MOD)
        self._pieces = 0
        self.hit: RepetitionHit | None = None

    @property
    def config(self) -> RepetitionConfig:
        return self._config

    @property
    def pieces_seen(self) -> int:
        return self._pieces

    def feed(self, delta: str) -> RepetitionHit | None:
        for piece in self._stream.feed(delta):
            self._push(piece)
        return self.hit

    def finish(self) -> RepetitionHit | None:
        for piece in self._stream.finish():
            self._push(piece)
        return self.hit

    def _push(self, piece: str) -> None:
        self._pieces += 1
        n = self._config.ngram
        if len(self._recent) == n:
            oldest = self._recent[0]
            self._rolling = (self._rolling - _piece_hash(oldest) * self._drop_factor) % _MOD
        self._recent.append(piece)
        self._rolling = (self._rolling * _BASE + _piece_hash(piece)) % _MOD
        if len(self._recent) < n:
            return
        current = self._rolling
        self._hashes.append(current)
        self._counts[current] += 1
        # The window is counted in n-gram start positions, i.e. in pieces.
        while len(self._hashes) > self._config.window:
            expired = self._hashes.popleft()
            self._counts[expired] -= 1
            if not self._counts[expired]:
                del self._counts[expired]
        occurrences = self._counts[current]
        if self.hit is None and occurrences >= self._config.threshold:
            self.hit = RepetitionHit(
                at_piece=self._pieces,
                occurrences=occurrences,
                ngram_text=" ".join(self._recent),
            )
