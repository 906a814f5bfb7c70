"""Word pieces and the rolling-hash loop detector, on a real loop from a capped Sky-T1 trace."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from verifiers.repetition import (
    RepetitionConfig,
    RepetitionDetector,
    WordPieceStream,
    count_word_pieces,
    word_pieces,
)
from verifiers.trim_replay import ReplayTrace

SKY = (
    Path(__file__).resolve().parents[3]
    / "evals/data/traces/skythought_sky-t1-math-correct-5k-27b.jsonl"
)
# Cut off by the token cap while cycling "So, the number is of the form ...20, ..." 44 times.
LOOPING_ID = "math500/10:test/number_theory/1032.json"
# Complete traces that legitimately repeat long formulas (double sums, binomial expansions).
COMPLETE_IDS = (
    "math500/1:test/intermediate_algebra/1994.json",
    "math500/15:test/precalculus/990.json",
    "math500/36:test/intermediate_algebra/428.json",
)


@lru_cache(maxsize=1)
def thinking_by_id() -> dict[str, str]:
    rows = [json.loads(line) for line in SKY.read_text(encoding="utf-8").splitlines()]
    wanted = {LOOPING_ID, *COMPLETE_IDS}
    return {r["id"]: ReplayTrace.from_record(r).thinking for r in rows if r["id"] in wanted}


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        pytest.param("So x = 42.", ["So", "x", "=", "4", "2", "."], id="digits-split"),
        pytest.param(r"\frac{1}{2}", ["\\", "frac", "{", "1", "}", "{", "2", "}"], id="latex"),
        pytest.param("don't", ["don", "'", "t"], id="apostrophe"),
        pytest.param("a_1", ["a", "_", "1"], id="underscore"),
        pytest.param("  \n ", [], id="blank"),
        pytest.param("π≈3.14", ["π", "≈", "3", ".", "1", "4"], id="unicode"),
    ],
)
def test_word_pieces(text: str, pieces: list[str]) -> None:
    assert word_pieces(text) == pieces
    assert count_word_pieces(text) == len(pieces)


@given(text=st.text(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=20))
def test_word_piece_stream_is_chunking_invariant(text: str, cuts: list[int]) -> None:
    stream = WordPieceStream()
    pieces: list[str] = []
    previous = 0
    for cut in sorted(c for c in cuts if c <= len(text)):
        pieces += stream.feed(text[previous:cut])
        previous = cut
    pieces += stream.feed(text[previous:]) + stream.finish()
    assert pieces == word_pieces(text)
    assert stream.count == len(pieces)


def test_detects_the_real_loop() -> None:
    text = thinking_by_id()[LOOPING_ID]
    detector = RepetitionDetector()
    hit = detector.feed(text)
    assert hit is not None
    assert hit.occurrences == RepetitionConfig().threshold
    # Detected inside the loop, long before the cap cut the trace off.
    assert hit.at_piece < count_word_pieces(text) // 2
    loop_start = text.index("So, the number is of the form ...20")
    assert hit.at_piece > count_word_pieces(text[:loop_start])
    assert "the number is of the form" in hit.ngram_text.replace(" ,", ",")


@pytest.mark.parametrize("trace_id", COMPLETE_IDS)
def test_formula_heavy_complete_traces_do_not_trigger(trace_id: str) -> None:
    assert RepetitionDetector().feed(thinking_by_id()[trace_id]) is None


def test_a_short_ngram_setting_would_misfire_on_formulas() -> None:
    # Why the defaults are long n-grams: 16-piece n-grams recur in ordinary math text.
    touchy = RepetitionConfig(ngram=16, threshold=3)
    text = thinking_by_id()["math500/1:test/intermediate_algebra/1994.json"]
    assert RepetitionDetector(touchy).feed(text) is not None


def test_streaming_chunking_does_not_move_the_hit() -> None:
    text = thinking_by_id()[LOOPING_ID]
    whole = RepetitionDetector().feed(text)
    detector = RepetitionDetector()
    hit = None
    for at in range(0, len(text), 7):
        hit = detector.feed(text[at : at + 7]) or hit
    assert whole is not None
    assert hit == whole


def test_synthetic_period_and_window() -> None:
    block = "alpha beta gamma delta epsilon " * 2  # 10 pieces
    config = RepetitionConfig(ngram=10, window=100, threshold=3)
    assert RepetitionDetector(config).feed(block * 3) is not None
    spaced = block + " ".join(f"w{i}" for i in range(200)) + " "  # ~700 pieces apart
    assert RepetitionDetector(config).feed(spaced * 3) is None  # repeats fall out of the window


def test_finish_flushes_a_trailing_word() -> None:
    config = RepetitionConfig(ngram=2, window=10, threshold=2)
    detector = RepetitionDetector(config)
    assert detector.feed("ab cd ab cd") is None  # the last "cd" is still pending
    assert detector.finish() is not None
    assert detector.pieces_seen == 4


@pytest.mark.parametrize(
    "kwargs", [{"ngram": 1}, {"window": 2}, {"threshold": 1}], ids=["ngram", "window", "threshold"]
)
def test_config_bounds(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        RepetitionConfig(**kwargs)
