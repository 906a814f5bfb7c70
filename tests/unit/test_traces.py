"""Trace parsing: the recorded JSONL rows (native or stringified values) and the thinking split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tts_orchestrator.exceptions import ConfigError
from tts_orchestrator.traces import ThinkingSplit, Trace, load_traces

TRACE_DIR = Path(__file__).resolve().parents[2] / "evals" / "data" / "traces"
FILES = {
    "skythought_sky-t1-math-correct-5k-27b.jsonl": 842,
    "thought-anchors_deepseek-r1-distill-llama-8b_math.jsonl": 20,
    "thought-anchors_deepseek-r1-distill-qwen-14b_math.jsonl": 20,
}


def row(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "t/0:x",
        "dataset": "math500",
        "model": "m",
        "problem": "What is 1+1?",
        "ground_truth": "2",
        "output": "I add.\n</think>\n\nThe answer is \\boxed{2}.",
        "final_answer": "2",
        "is_correct": True,
        "thinking_delimiters": ["<think>", "</think>"],
        "complete": True,
    }
    return base | overrides


@pytest.fixture(scope="module")
def traces() -> list[Trace]:
    return load_traces(TRACE_DIR / name for name in FILES)


def test_every_shipped_file_loads(traces: list[Trace]) -> None:
    by_file = [load_traces([TRACE_DIR / name]) for name in FILES]
    assert [len(t) for t in by_file] == list(FILES.values())
    assert len(traces) == sum(FILES.values())
    assert {t.think_close for t in traces} == {"</think>", "<|end_of_thought|>"}
    assert sum(t.is_correct for t in by_file[1]) == 10  # one correct + one incorrect per problem
    assert (TRACE_DIR / "README.md").read_text().count("MIT") >= 2  # attribution kept


def test_stringified_values_are_parsed() -> None:
    trace = Trace.model_validate(
        row(
            is_correct="False",
            complete="True",
            prompt_ends_with_think_tag="True",
            thinking_delimiters="['<think>', '</think>']",
            level="Level 5",
            subject="None",
            generation="{'temperature': 0.6, 'top_p': 0.95}",
        )
    )
    assert trace.is_correct is False and trace.complete is True
    assert trace.prompt_ends_with_think_tag is True
    assert (trace.think_open, trace.think_close) == ("<think>", "</think>")
    assert (trace.level, trace.subject) == (5, None)
    assert trace.generation == {"temperature": 0.6, "top_p": 0.95}


@pytest.mark.parametrize(
    ("output", "split", "thinking", "answer"),
    [
        ("<think>\nHmm.\n</think>\n\nIt is 2.", ThinkingSplit.MARKER, "\nHmm.\n", "\n\nIt is 2."),
        ("Hmm.\n</think>It is 2.", ThinkingSplit.MARKER, "Hmm.\n", "It is 2."),
        (
            "So 2.\n\n**Final Answer**\n\nok\n\n**Final Answer**\n\n\\boxed{2}",
            ThinkingSplit.FINAL_ANSWER_HEADING,
            "So 2.\n\n**Final Answer**\n\nok\n\n",
            "**Final Answer**\n\n\\boxed{2}",
        ),
        ("So 2.\n\n**Final Answer:**\n2", ThinkingSplit.FINAL_ANSWER_HEADING, "So 2.\n\n", None),
        ("<think>I was cut off wh", ThinkingSplit.NONE, "I was cut off wh", ""),
    ],
    ids=["marker-open-in-output", "marker-open-in-prompt", "last-heading", "heading-colon", "none"],
)
def test_thinking_split(
    output: str, split: ThinkingSplit, thinking: str, answer: str | None
) -> None:
    trace = Trace.model_validate(row(output=output))
    assert trace.split is split
    assert trace.thinking_text == thinking
    if answer is not None:
        assert trace.answer_text == answer
    assert trace.has_answer_section is (split is not ThinkingSplit.NONE)


def test_real_traces_split_consistently(traces: list[Trace]) -> None:
    for t in traces:
        if t.split is ThinkingSplit.MARKER:
            assert t.output[t.thinking_end :].startswith(t.think_close)
            assert t.has_thinking_end
        assert t.output[t.thinking_start : t.thinking_end] == t.thinking_text
        assert t.output.endswith(t.answer_text)
    anchors = [t for t in traces if t.dataset == "math_hendrycks"]
    assert all(t.split is ThinkingSplit.MARKER and "\\boxed" in t.answer_text for t in anchors)
    sky_tagless = [t for t in traces if t.split is ThinkingSplit.FINAL_ANSWER_HEADING]
    assert len(sky_tagless) > 100
    assert all(t.think_close not in t.output for t in sky_tagless)


def test_missing_file_and_bad_row_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read trace file"):
        load_traces([tmp_path / "absent.jsonl"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(row()) + "\n\n" + json.dumps(row(is_correct="maybe")) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl:3"):
        load_traces([bad])
