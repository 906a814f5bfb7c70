"""The trace model: every shipped file family's rows (native or stringified values), the thinking
split, the final answer as the service extracts it, and the per-problem groups."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from verifiers.traces import ThinkingSplit, Trace, TraceFormatError, group_by_problem, load_traces

TRACE_DIR = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"
FILES_SKY = "skythought_sky-t1-math-correct-5k-27b.jsonl"
SAMPLES = TRACE_DIR.parent / "samples" / "qwen2.5-math_math_cot_100x8.jsonl"
FILES = {
    "skythought_sky-t1-math-correct-5k-27b.jsonl": 842,
    "thought-anchors_deepseek-r1-distill-llama-8b_math.jsonl": 20,
    "thought-anchors_deepseek-r1-distill-qwen-14b_math.jsonl": 20,
    "mip_qwq-32b_gsm8k.jsonl": 388,
    "mip_r1-distill-qwen-32b_gsm8k.jsonl": 388,
    "mip_qwen2.5-32b-instruct_gsm8k.jsonl": 388,
    "mip_qwq-32b_math500.jsonl": 52,
    "mip_r1-distill-qwen-32b_math500.jsonl": 52,
    "mip_limo-32b_math500.jsonl": 52,
    "mip_qwen2.5-32b-instruct_math500.jsonl": 52,
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
    assert {t.think_close for t in traces} == {"</think>", "<|end_of_thought|>", ""}
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
    assert trace.is_correct is False
    assert trace.complete is True
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
        ("<think>I was cut off wh", ThinkingSplit.UNCLOSED, "I was cut off wh", ""),
    ],
    ids=[
        "marker-open-in-output",
        "marker-open-in-prompt",
        "last-heading",
        "heading-colon",
        "unclosed",
    ],
)
def test_thinking_split(
    output: str, split: ThinkingSplit, thinking: str, answer: str | None
) -> None:
    trace = Trace.model_validate(row(output=output))
    assert trace.split is split
    assert trace.thinking_text == thinking
    if answer is not None:
        assert trace.answer_text == answer
    assert trace.has_answer_section is (split is not ThinkingSplit.UNCLOSED)


@pytest.mark.parametrize(
    ("output", "split", "thinking"),
    [
        ("It is \\boxed{2}.", ThinkingSplit.NO_THINKING, ""),
        (
            "Hmm, 1+1.\n\n**Final Answer**\n\\boxed{2}",
            ThinkingSplit.FINAL_ANSWER_HEADING,
            "Hmm, 1+1.\n\n",
        ),
    ],
    ids=["no-markers-no-heading", "no-markers-heading"],
)
def test_records_without_delimiters(output: str, split: ThinkingSplit, thinking: str) -> None:
    trace = Trace.model_validate(row(output=output, thinking_delimiters=None))
    assert (trace.split, trace.thinking_text) == (split, thinking)
    assert trace.answer == "2"


def test_real_traces_split_consistently(traces: list[Trace]) -> None:
    for t in traces:
        if t.split is ThinkingSplit.MARKER:
            assert t.output[t.thinking_end :].startswith(t.think_close)
            assert t.has_thinking_end
        assert t.output[t.thinking_start : t.thinking_end] == t.thinking_text
        assert t.output.endswith(t.answer_text)
    anchors = [t for t in traces if t.dataset == "math_hendrycks"]
    assert all(t.split is ThinkingSplit.MARKER and "\\boxed" in t.answer_text for t in anchors)
    sky_tagless = [
        t
        for t in traces
        if t.split is ThinkingSplit.FINAL_ANSWER_HEADING and t.model.startswith("Sky-T1")
    ]
    assert len(sky_tagless) > 100
    assert all(t.think_close not in t.output for t in sky_tagless)


def test_missing_file_and_bad_row_are_format_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="cannot read trace file"):
        load_traces([tmp_path / "absent.jsonl"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(row()) + "\n\n" + json.dumps(row(is_correct="maybe")) + "\n")
    with pytest.raises(TraceFormatError, match=r"bad\.jsonl:3"):
        load_traces([bad])


# -- every shipped family: thinking split, answer, grouping ------------------------------------
# file -> (split kinds, records whose extracted answer agrees with the source's final answer)
FAMILY_SPLITS = {
    "skythought_sky-t1-math-correct-5k-27b.jsonl": {
        ThinkingSplit.MARKER: 312,
        ThinkingSplit.FINAL_ANSWER_HEADING: 111,
        ThinkingSplit.UNCLOSED: 419,
    },
    "thought-anchors_deepseek-r1-distill-qwen-14b_math.jsonl": {ThinkingSplit.MARKER: 20},
    "mip_qwq-32b_gsm8k.jsonl": {ThinkingSplit.MARKER: 388},
    "mip_r1-distill-qwen-32b_math500.jsonl": {ThinkingSplit.MARKER: 52},
    "mip_limo-32b_math500.jsonl": {
        ThinkingSplit.FINAL_ANSWER_HEADING: 24,
        ThinkingSplit.NO_THINKING: 28,
    },
    "mip_qwen2.5-32b-instruct_gsm8k.jsonl": {ThinkingSplit.NO_THINKING: 388},
}


@pytest.mark.parametrize("name", list(FAMILY_SPLITS), ids=lambda n: n.split("_")[1])
def test_family_thinking_split(traces: list[Trace], name: str) -> None:
    mine = load_traces([TRACE_DIR / name])
    assert Counter(t.split for t in mine) == FAMILY_SPLITS[name]
    for t in mine:
        if t.split is ThinkingSplit.NO_THINKING:
            assert t.thinking_text == ""
            assert t.answer_text == t.output
        if t.split is ThinkingSplit.MARKER:
            assert t.think_close not in t.thinking_text
            assert t.think_open not in t.thinking_text[:20]


@pytest.mark.parametrize(
    ("name", "agree_at_least"),
    [
        ("thought-anchors_deepseek-r1-distill-llama-8b_math.jsonl", 20),
        ("mip_qwq-32b_math500.jsonl", 52),
        ("mip_r1-distill-qwen-32b_gsm8k.jsonl", 387),
        ("mip_limo-32b_math500.jsonl", 32),  # its headings hold sentences
        ("mip_qwen2.5-32b-instruct_math500.jsonl", 46),
    ],
    ids=["thought-anchors", "qwq", "r1-distill", "limo", "qwen2.5-instruct"],
)
def test_family_answer_matches_the_source_extraction(name: str, agree_at_least: int) -> None:
    """`Trace.answer` is the service's extraction from the text; where the source boxed its
    answer the two agree (the source's `final_answer` is never read by `answer`)."""
    mine = load_traces([TRACE_DIR / name])
    agree = sum(
        t.answer is not None and t.final_answer is not None and t.answer == t.final_answer
        for t in mine
    )
    assert agree >= agree_at_least
    blanked = [t.model_copy(update={"final_answer": None}) for t in mine]
    assert [t.answer for t in blanked] == [t.answer for t in mine]


def test_mip_files_group_per_problem_across_models() -> None:
    names = [n for n in FILES if n.startswith("mip_") and n.endswith("math500.jsonl")]
    groups = group_by_problem(load_traces(TRACE_DIR / n for n in names))
    assert len(groups) == 52
    assert {g.size for g in groups} == {4}
    assert all(len(g.models) == 4 and len({t.problem for t in g.traces}) == 1 for g in groups)
    gsm = group_by_problem(load_traces([TRACE_DIR / "mip_qwq-32b_gsm8k.jsonl"]))
    assert len(gsm) == 388
    assert gsm[0].key == "gsm8k/0"


def test_thought_anchors_group_both_traces_of_a_problem() -> None:
    groups = group_by_problem(
        load_traces([TRACE_DIR / "thought-anchors_deepseek-r1-distill-qwen-14b_math.jsonl"])
    )
    assert len(groups) == 10
    assert all(
        g.size == 2 and sorted(t.is_correct for t in g.traces) == [False, True] for g in groups
    )


def test_sky_t1_is_one_trace_per_problem() -> None:
    groups = group_by_problem(load_traces([TRACE_DIR / FILES_SKY]))
    assert len(groups) == 842
    assert {g.size for g in groups} == {1}


def test_sample_bank_is_eight_samples_per_problem() -> None:
    bank = load_traces([SAMPLES])
    groups = group_by_problem(bank)
    assert len(bank) == 800
    assert len(groups) == 100
    assert {g.size for g in groups} == {8}
    first = groups[0]
    assert first.key == "math_cot_100/0"
    assert first.ground_truth == "420"
    assert [t.id for t in first.traces][:2] == ["math_cot_100/0#0", "math_cot_100/0#1"]
    assert all(t.split is ThinkingSplit.NO_THINKING and t.answer is not None for t in bank)
    assert 0.90 < sum(t.is_correct for t in bank) / 800 < 0.92  # 91.1% by math-verify
    assert (SAMPLES.parent / "README.md").read_text().count("MIT") >= 1


def test_filters(tmp_path: Path) -> None:
    sky = TRACE_DIR / FILES_SKY
    assert len(load_traces([sky], complete_only=True)) == 432
    assert {t.dataset for t in load_traces([sky], datasets=["aime24"])} == {"aime24"}


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[3] / "verifiers" / "traces").glob("*.py")),
    ids=lambda p: p.name,
)
def test_the_trace_model_is_pure(path: Path) -> None:
    """verifiers/ stays pure: no ray / fastapi / redis / httpx, nothing from the service."""
    import ast
    import sys

    allowed = {"numpy", "pydantic", "tokenizers", "verifiers"} | set(sys.stdlib_module_names)
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - allowed == set()
