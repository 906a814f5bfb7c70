"""Thought segmentation: boundaries at reflection markers, and streaming == batch."""

from __future__ import annotations

import itertools
import json
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifiers.segmentation import (
    MARKERS_BY_FAMILY,
    SegmenterConfig,
    Thought,
    ThoughtSegmenter,
    segment,
)

TRACES = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"
SKY = TRACES / "skythought_sky-t1-math-correct-5k-27b.jsonl"
R1 = TRACES / "thought-anchors_deepseek-r1-distill-qwen-14b_math.jsonl"


@lru_cache(maxsize=1)
def real_texts() -> tuple[tuple[str, str], ...]:
    """(family, text) of a spread of real traces, cut to keep the property test fast."""
    out: list[tuple[str, str]] = []
    for path, family, step in ((SKY, "sky_t1", 97), (R1, "deepseek_r1", 5)):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        out += [(family, row["output"][:6000]) for row in rows[::step]]
    return tuple(out)


def texts(thoughts: list[Thought]) -> list[str]:
    return [t.text for t in thoughts]


@pytest.mark.parametrize(
    ("text", "family", "expected", "markers"),
    [
        pytest.param(
            "x = 2.\n\nWait, check: 2 + 2 = 4.\n\nSo x = 2.",
            "generic",
            ["x = 2.\n\n", "Wait, check: 2 + 2 = 4.\n\nSo x = 2."],
            [None, "Wait"],
            id="wait-opens-a-thought",
        ),
        pytest.param(
            "a\n\nAlternatively, b\n\nHmm, c\n\nLet me double-check d",
            "generic",
            ["a\n\n", "Alternatively, b\n\n", "Hmm, c\n\n", "Let me double-check d"],
            [None, "Alternatively", "Hmm", "Let me double-check"],
            id="several-markers",
        ),
        pytest.param("a. Wait, no. b", "generic", ["a. Wait, no. b"], [None], id="mid-paragraph"),
        pytest.param("a\nWait, b", "generic", ["a\nWait, b"], [None], id="single-newline"),
        pytest.param("a\n\nButter melts.", "generic", ["a\n\nButter melts."], [None], id="prefix"),
        pytest.param("a\n\nwait, b", "generic", ["a\n\nwait, b"], [None], id="lower-case"),
        pytest.param(
            "a\n  \n\t Wait b", "generic", ["a\n  \n\t ", "Wait b"], [None, "Wait"], id="blank-ws"
        ),
        pytest.param("Wait, a\n\nb", "generic", ["Wait, a\n\nb"], [None], id="marker-at-start"),
        pytest.param(
            "a\n\nOkay, so b", "deepseek_r1", ["a\n\n", "Okay, so b"], [None, "Okay, so"], id="r1"
        ),
        pytest.param("a\n\nOkay, so b", "generic", ["a\n\nOkay, so b"], [None], id="not-generic"),
        pytest.param(
            "a\n\nMaybe I erred", "sky_t1", ["a\n\n", "Maybe I erred"], [None, "Maybe I"], id="sky"
        ),
        pytest.param("a\n\nWait", "generic", ["a\n\n", "Wait"], [None, "Wait"], id="marker-at-end"),
        pytest.param("", "generic", [], [], id="empty"),
    ],
)
def test_boundaries(text: str, family: str, expected: list[str], markers: list[str | None]) -> None:
    thoughts = segment(text, SegmenterConfig(family=family))
    assert texts(thoughts) == expected
    assert [t.marker for t in thoughts] == markers
    assert [t.index for t in thoughts] == list(range(len(expected)))


def test_explicit_markers_override_the_family() -> None:
    config = SegmenterConfig(family="deepseek_r1", markers=("Check",))
    assert texts(segment("a\n\nWait b\n\nCheck c", config)) == ["a\n\nWait b\n\n", "Check c"]


def test_case_insensitive_option() -> None:
    config = SegmenterConfig(case_sensitive=False)
    assert texts(segment("a\n\nwait, b", config)) == ["a\n\n", "wait, b"]


def test_unknown_family_uses_the_default_list() -> None:
    assert SegmenterConfig(family="nope").resolved_markers() == MARKERS_BY_FAMILY["generic"]


def test_blank_marker_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-blank"):
        SegmenterConfig(markers=("Wait", " "))


def test_thoughts_tile_the_text_on_real_traces() -> None:
    for family, text in real_texts():
        thoughts = segment(text, SegmenterConfig(family=family))
        assert "".join(texts(thoughts)) == text
        assert all(a.end == b.start for a, b in itertools.pairwise(thoughts))
        assert all(t.text == text[t.start : t.end] for t in thoughts)
    assert len(segment(real_texts()[0][1], SegmenterConfig(family="sky_t1"))) > 3


def test_feed_returns_only_newly_closed_thoughts() -> None:
    segmenter = ThoughtSegmenter()
    assert segmenter.feed("First idea.\n\nWa") == []
    # "Wait" is decided only once enough characters follow the paragraph break.
    closed = segmenter.feed("it, second idea that is long enough.\n\n")
    assert texts(closed) == ["First idea.\n\n"]
    assert texts(segmenter.finish()) == ["Wait, second idea that is long enough.\n\n"]
    assert segmenter.consumed_chars == len(
        "First idea.\n\nWait, second idea that is long enough.\n\n"
    )


def test_feed_after_finish_is_an_error() -> None:
    segmenter = ThoughtSegmenter()
    segmenter.finish()
    with pytest.raises(RuntimeError):
        segmenter.feed("more")
    assert segmenter.finish() == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(data=st.data())
def test_streaming_equals_batch_for_any_chunking(data: st.DataObject) -> None:
    family, text = data.draw(st.sampled_from(real_texts()), label="trace")
    cuts = sorted(
        data.draw(
            st.lists(st.integers(min_value=0, max_value=len(text)), max_size=200), label="cuts"
        )
    )
    config = SegmenterConfig(family=family)
    segmenter = ThoughtSegmenter(config)
    streamed: list[Thought] = []
    previous = 0
    for cut in [*cuts, len(text)]:
        streamed += segmenter.feed(text[previous:cut])
        previous = cut
    streamed += segmenter.finish()
    assert streamed == segment(text, config)


def test_one_character_at_a_time_equals_batch() -> None:
    family, text = real_texts()[-1]
    config = SegmenterConfig(family=family)
    segmenter = ThoughtSegmenter(config)
    streamed = [t for ch in text for t in segmenter.feed(ch)] + segmenter.finish()
    assert streamed == segment(text, config)


def test_paragraph_units_cut_at_every_paragraph_and_stream_like_batch() -> None:
    text = "I add 2 and 3.\n\nSo the answer is 5.\n\nWait, let me check: 5.\n\nYes."
    config = SegmenterConfig(family="qwq", paragraphs=True)
    units = segment(text, config)
    assert [u.text for u in units] == [
        "I add 2 and 3.\n\n",
        "So the answer is 5.\n\n",
        "Wait, let me check: 5.\n\n",
        "Yes.",
    ]
    assert [u.marker for u in units] == [None, None, "Wait", None]
    streamed = ThoughtSegmenter(config)
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    pieces = [t for c in chunks for t in streamed.feed(c)] + streamed.finish()
    assert pieces == units
    assert len(segment(text, SegmenterConfig(family="qwq"))) == 2  # only "Wait" by default


def test_a_paragraph_knows_the_marker_that_opens_the_next_one() -> None:
    text = "So the total is 48.\n\nWait, let me check.\n\nYes, 48.\n\nThe answer is 48."
    units = segment(text, SegmenterConfig(paragraphs=True))
    assert [u.next_marker for u in units] == ["Wait", None, None, None]
    streamed = ThoughtSegmenter(SegmenterConfig(paragraphs=True))
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    closed = [t for c in chunks for t in streamed.feed(c)] + streamed.finish()
    assert closed == units
