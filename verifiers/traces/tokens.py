"""Real token counts: Qwen2.5's byte-level BPE tokenizer, run by `tokenizers`.

QwQ-32B, DeepSeek-R1-Distill-Qwen and the catalog Qwen2.5-Coder models share this tokenizer (the
R1-Distill-Llama, Gemma-based Sky-T1 and others do not; their counts are Qwen2.5 tokens of
their text, and every report names the tokenizer that counted). The tokenizer ships as package
data, rebuilt from a catalog GGUF's metadata by ``scripts/build_qwen_tokenizer.py`` (see
``data/README.md`` for its source and licence).

Counts are cached per text, and misses are encoded in one batch (``encode_batch`` runs in
`tokenizers`' own thread pool), so counting thousands of long traces twice costs one pass.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from importlib import resources

from tokenizers import Tokenizer

__all__ = ["QWEN25_TOKENIZER", "TokenCounter"]

QWEN25_TOKENIZER = "Qwen2.5 BPE (151,665 tokens; from the qwen2.5-coder-0.5b-instruct GGUF)"
_QWEN25_RESOURCE = "qwen2.5-tokenizer.json.gz"


class TokenCounter:
    """Counts tokens of texts with one tokenizer (named by `name`), caching each text's count."""

    def __init__(self, tokenizer: Tokenizer, *, name: str) -> None:
        self._tokenizer = tokenizer
        self.name = name
        self._cache: dict[str, int] = {}

    @classmethod
    def qwen25(cls) -> TokenCounter:
        """The packaged Qwen2.5 tokenizer (about 1 s to load)."""
        data = resources.files("verifiers.traces").joinpath("data", _QWEN25_RESOURCE)
        text = gzip.decompress(data.read_bytes()).decode("utf-8")
        return cls(Tokenizer.from_str(text), name=QWEN25_TOKENIZER)

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Token counts of `texts` (no special tokens added), in order."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            encoded = self._tokenizer.encode_batch(missing, add_special_tokens=False)
            self._cache.update(zip(missing, (len(e.ids) for e in encoded), strict=True))
        return [self._cache[t] for t in texts]

    def prefix_chars(self, text: str, tokens: int) -> int:
        """Characters of `text` covered by its first `tokens` tokens (all of it if fewer)."""
        if tokens <= 0:
            return 0
        offsets = self._tokenizer.encode(text, add_special_tokens=False).offsets
        return len(text) if tokens >= len(offsets) else offsets[tokens - 1][1]

    def pieces(self, text: str) -> list[str]:
        """`text` cut at its tokens' ends: one piece per token, ``"".join(pieces) == text``.

        A token that ends inside a character another token finishes (byte-level BPE splits some
        multi-byte characters) is an empty piece, so ``len(pieces) == count(text)``.
        """
        ends = [end for _, end in self._tokenizer.encode(text, add_special_tokens=False).offsets]
        pieces, at = [], 0
        for end in ends:
            pieces.append(text[at:end] if end > at else "")
            at = max(at, end)
        if pieces and at < len(text):
            pieces[-1] += text[at:]
        return pieces

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
