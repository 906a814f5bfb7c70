"""Offline replay: real traces through segmenter + rule judge + TrimController."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from verifiers.equivalence import EquivalenceChecker
from verifiers.judges import LlmJudge, RuleJudge
from verifiers.trim_replay import (
    ReplayConfig,
    ReplayTrace,
    family_for_model,
    format_totals,
    headroom,
    load_replay_traces,
    replay,
    replay_trace,
)
from verifiers.trimr import TrimRConfig, TrimRule

TRACES = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"
SKY = TRACES / "skythought_sky-t1-math-correct-5k-27b.jsonl"
R1_QWEN = TRACES / "thought-anchors_deepseek-r1-distill-qwen-14b_math.jsonl"
R1_LLAMA = TRACES / "thought-anchors_deepseek-r1-distill-llama-8b_math.jsonl"


@lru_cache(maxsize=1)
def rows() -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in (SKY, R1_QWEN, R1_LLAMA):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            out[(path.name, row["id"])] = row
    return out


def trace(path: Path, trace_id: str) -> ReplayTrace:
    return ReplayTrace.from_record(rows()[(path.name, trace_id)])


@pytest.fixture(scope="module")
async def checker() -> AsyncIterator[EquivalenceChecker]:
    async with EquivalenceChecker(timeout_s=5.0) as built:
        yield built


def base_row(**overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": "t/0",
        "model": "Sky-T1-math-correct-5K-27B",
        "problem": "What is 1+1?",
        "ground_truth": "2",
        "output": "<|begin_of_thought|>\n\nI add.\n\n<|end_of_thought|>\n\n\\boxed{2}",
        "final_answer": "2",
        "is_correct": True,
        "thinking_delimiters": ["<|begin_of_thought|>", "<|end_of_thought|>"],
        "complete": True,
        "generation": {"max_tokens_per_call": 32768},
    }
    return row | overrides


@pytest.mark.parametrize(
    ("overrides", "thinking", "budget"),
    [
        pytest.param({}, "\n\nI add.\n\n", 32768, id="tagged"),
        pytest.param(
            {
                "is_correct": "True",
                "complete": "True",
                "thinking_delimiters": "['<|begin_of_thought|>', '<|end_of_thought|>']",
                "generation": "{'max_tokens': 16384}",
            },
            "\n\nI add.\n\n",
            16384,
            id="stringified",
        ),
        pytest.param(
            {"output": "I add.\n\n**Final Answer**\n\n\\[ \\boxed{2} \\]"},
            "I add.\n\n",
            32768,
            id="tag-less-final-answer-heading",
        ),
        pytest.param(
            {
                "output": "I add.\n</think>\n\n\\boxed{2}",
                "thinking_delimiters": ["<think>", "</think>"],
                "generation": {},
            },
            "I add.\n",
            None,
            id="prompt-opened-think",
        ),
        pytest.param({"output": "I add and add and"}, "I add and add and", 32768, id="cut-off"),
    ],
)
def test_from_record(overrides: dict[str, Any], thinking: str, budget: int | None) -> None:
    parsed = ReplayTrace.from_record(base_row(**overrides))
    assert parsed.thinking == thinking
    assert parsed.token_budget == budget
    assert parsed.is_correct is True
    assert parsed.complete is True


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("Sky-T1-math-correct-5K-27B (SkyThought; base presumably gemma-2-27b-it)", "sky_t1"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", "deepseek_r1"),
        ("Qwen/QwQ-32B", "qwq"),
        ("Qwen/Qwen3-0.6B", "qwen3"),
        ("openPangu-Embedded-7B", "openpangu"),
        ("some-model", "generic"),
    ],
)
def test_family_for_model(model: str, family: str) -> None:
    assert family_for_model(model) == family


def test_load_filters_datasets_and_incomplete_rows() -> None:
    complete = load_replay_traces([SKY], datasets=["math500"])
    everything = load_replay_traces([SKY], datasets=["math500"], complete_only=False)
    assert len(complete) == 238
    assert len(everything) == 500
    assert {t.family for t in complete} == {"sky_t1"}


@pytest.mark.parametrize(
    ("path", "trace_id", "answer"),
    [
        pytest.param(SKY, "math500/373:test/algebra/2264.json", "1 + 2i", id="sky-t1"),
        pytest.param(R1_QWEN, "MATH-4682:correct_base_solution", "19", id="r1-qwen"),
    ],
)
async def test_overthinking_trims_real_traces_and_keeps_the_answer(
    path: Path, trace_id: str, answer: str, checker: EquivalenceChecker
) -> None:
    subject = trace(path, trace_id)
    outcome = await replay_trace(subject, judge=RuleJudge(checker), checker=checker)
    assert outcome.rule is TrimRule.OVERTHINKING
    assert outcome.answer_at_trim == answer
    assert outcome.trim_matches_final
    assert outcome.correct_before
    assert outcome.correct_after
    assert outcome.tokens_at_trim < 0.7 * outcome.thinking_tokens
    assert outcome.tokens_saved == outcome.thinking_tokens - outcome.tokens_at_trim


async def test_short_trace_without_repeated_conclusions_is_not_trimmed(
    checker: EquivalenceChecker,
) -> None:
    subject = trace(SKY, "math500/0:test/precalculus/807.json")
    outcome = await replay_trace(subject, judge=RuleJudge(checker), checker=checker)
    assert outcome.rule is None
    assert outcome.tokens_at_trim == outcome.thinking_tokens
    assert outcome.correct_after is outcome.correct_before is True


async def test_verdict_latency_trims_later_never_earlier(checker: EquivalenceChecker) -> None:
    subject = trace(SKY, "math500/373:test/algebra/2264.json")
    judge = RuleJudge(checker)
    at = [
        (
            await replay_trace(
                subject,
                judge=judge,
                checker=checker,
                config=ReplayConfig(verdict_delay_tokens=delay),
            )
        ).tokens_at_trim
        for delay in (0, 40, 200)
    ]
    assert at[0] < at[1] < at[2]


async def test_forced_answer_is_graded_against_the_ground_truth(
    checker: EquivalenceChecker,
) -> None:
    subject = trace(R1_QWEN, "MATH-6998:incorrect_base_solution")
    config = ReplayConfig(trimr=TrimRConfig(rules=frozenset({TrimRule.UNDERTHINKING})))
    outcome = await replay_trace(subject, judge=RuleJudge(checker), checker=checker, config=config)
    assert outcome.rule is TrimRule.UNDERTHINKING
    assert "20 thoughts" in outcome.reason
    assert outcome.trim_matches_final is False  # a different (also wrong) answer
    assert outcome.correct_before is False
    assert outcome.correct_after is False


async def test_report_totals_add_up(checker: EquivalenceChecker) -> None:
    subjects = [
        trace(SKY, "math500/373:test/algebra/2264.json"),
        trace(SKY, "math500/0:test/precalculus/807.json"),
        trace(R1_QWEN, "MATH-6998:incorrect_base_solution"),
    ]
    # The issue-6 rules (thought count, TARGET bar, thought cut points), not today's presets.
    legacy = ReplayConfig(trimr=TrimRConfig(), paragraphs=False)
    report = await replay(subjects, judge=RuleJudge(checker), checker=checker, config=legacy)
    totals = report.totals
    assert report.judge == "rule"
    assert totals.traces == 3
    assert totals.thinking_tokens_before == sum(o.thinking_tokens for o in report.traces)
    assert totals.thinking_tokens_after == sum(o.tokens_at_trim for o in report.traces)
    before, after = totals.thinking_tokens_before, totals.thinking_tokens_after
    assert totals.saved_pct == pytest.approx(100 * (before - after) / before)
    per_rule = totals.per_rule
    assert sum(r.trims for r in per_rule.values()) == totals.trimmed == 2
    assert per_rule[TrimRule.OVERTHINKING.value].trims == 1
    assert per_rule[TrimRule.UNDERTHINKING.value].trims == 1
    assert totals.accuracy_before == pytest.approx(100 * 2 / 3)
    assert "judge=rule traces=3 trimmed=2" in format_totals(report)


def test_headroom_shrinks_with_more_required_mentions() -> None:
    subjects = load_replay_traces([R1_QWEN])
    bounds = [headroom(subjects, mentions=n).saved_pct for n in (1, 2, 3)]
    assert bounds[0] > bounds[1] > bounds[2] > 0


async def test_the_llm_judge_runs_the_same_path(checker: EquivalenceChecker) -> None:
    """A scripted verifier: Yes when the excerpt mentions "answer"; all answers agree."""

    async def score(prompt: str) -> dict[str, float]:
        if prompt.rfind("\nSecond: ") > prompt.rfind("\nExcerpt: "):
            return {"Yes": -0.01, "No": -5.0}  # consistency question
        excerpt = prompt.rsplit("Excerpt:", 1)[-1]
        return {"Yes": -0.01, "No": -5.0} if "answer" in excerpt else {"No": -0.01}

    subject = trace(SKY, "math500/373:test/algebra/2264.json")
    outcome = await replay_trace(subject, judge=LlmJudge(score), checker=checker)
    assert outcome.rule is TrimRule.OVERTHINKING
    assert outcome.answer_at_trim == "1 + 2i"  # read out of the agreed thought's tail
    assert outcome.correct_after
