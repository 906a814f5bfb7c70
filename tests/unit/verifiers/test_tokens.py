"""The packaged Qwen2.5 tokenizer: real ids, counts, and the count cache."""

from __future__ import annotations

import pytest

from verifiers.traces import QWEN25_TOKENIZER, TokenCounter


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter.qwen25()


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("Hello world", [9707, 1879]),
        ("<|im_start|>user\n", [151644, 872, 198]),
        ("<|im_end|>", [151645]),
        ("12345", [16, 17, 18, 19, 20]),  # Qwen2 splits digits one by one
        ("你好", [108386]),
    ],
    ids=["words", "chat-start", "im-end", "digits", "cjk"],
)
def test_known_qwen25_ids(counter: TokenCounter, text: str, ids: list[int]) -> None:
    assert counter.encode(text) == ids


def test_counts_are_cached_and_batched(counter: TokenCounter) -> None:
    texts = ["Let me think.", "Hello world", "Let me think."]
    assert counter.count_many(texts) == [4, 2, 4]
    assert counter.count("Hello world") == 2
    assert counter.name == QWEN25_TOKENIZER
    assert "Qwen2.5" in counter.name
