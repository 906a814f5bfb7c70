from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifiers.families import FAMILIES, get_family
from verifiers.reasoning import ReasoningSplitter, split_reasoning

TRACES = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"


@pytest.mark.parametrize(
    ("family", "text", "reasoning", "content"),
    [
        pytest.param(
            "generic", "<think>x</think>y", "", "<think>x</think>y", id="generic-no-markers"
        ),
        pytest.param("qwen3", "<think>plan</think>\n\nanswer", "plan", "\n\nanswer", id="qwen3"),
        pytest.param("qwen3", "  <think>a</think>b", "a", "b", id="leading-space"),
        pytest.param("qwen3", "no thinking here", "", "no thinking here", id="qwen3-fast"),
        pytest.param("deepseek_r1", "step 1</think>42", "step 1", "42", id="r1-starts-inside"),
        pytest.param(
            "deepseek_r1", "cut off mid thought", "cut off mid thought", "", id="r1-unclosed"
        ),
        pytest.param("sky_t1", "<|begin_of_thought|>t<|end_of_thought|>s", "t", "s", id="sky-t1"),
        pytest.param("openpangu", "[unused16]t[unused17]a", "t", "a", id="pangu"),
    ],
)
def test_split(family: str, text: str, reasoning: str, content: str) -> None:
    assert split_reasoning(text, get_family(family)) == (reasoning, content)


def test_marker_split_across_chunks_is_held_back() -> None:
    s = ReasoningSplitter(get_family("qwen3"))
    assert s.feed("<thi") == ("", "")
    assert s.feed("nk>abc</th") == ("abc", "")
    assert s.feed("ink>done") == ("", "done")
    assert s.thinking_closed


def test_unknown_family_lists_known_names() -> None:
    with pytest.raises(KeyError, match="qwen3"):
        get_family("nope")


def _trace_texts() -> list[tuple[str, str]]:
    out = []
    for path in sorted(TRACES.glob("thought-anchors_*.jsonl")):
        for line in path.read_text().splitlines()[:4]:
            row = json.loads(line)
            out.append(("deepseek_r1", row["output"][:3000] + "</think>" + row["output"][-500:]))
    return out


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_streaming_equals_batch_on_real_traces(data: st.DataObject) -> None:
    family_name, text = data.draw(st.sampled_from(_trace_texts()))
    family = FAMILIES[family_name]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=40)))
    s = ReasoningSplitter(family)
    r, c = [], []
    prev = 0
    for cut in [*cuts, len(text)]:
        dr, dc = s.feed(text[prev:cut])
        r.append(dr)
        c.append(dc)
        prev = cut
    dr, dc = s.finish()
    assert ("".join(r) + dr, "".join(c) + dc) == split_reasoning(text, family)
