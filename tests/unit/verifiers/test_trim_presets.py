"""Per-family TrimR presets on real traces, and the replay's grading that must not cheat."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from verifiers.equivalence import EquivalenceChecker
from verifiers.judges import JudgeContext, RuleJudge, Verdict
from verifiers.repetition import count_word_pieces
from verifiers.segmentation import SegmenterConfig, Thought, segment
from verifiers.trim_presets import PRESETS, judge_configs, preset_for
from verifiers.trim_replay import (
    ReplayConfig,
    ReplayTrace,
    family_for_model,
    headroom,
    replay,
    replay_trace,
    summarize,
)
from verifiers.trimr import TrimController, TrimRConfig, TrimRule

TRACES = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"
FILES = {
    "qwq": "mip_qwq-32b_gsm8k.jsonl",
    "deepseek_r1": "mip_r1-distill-qwen-32b_gsm8k.jsonl",
    "sky_t1": "skythought_sky-t1-math-correct-5k-27b.jsonl",
    "limo": "mip_limo-32b_math500.jsonl",
}


@lru_cache(maxsize=8)
def _rows(name: str) -> dict[str, dict[str, Any]]:
    lines = (TRACES / name).read_text(encoding="utf-8").splitlines()
    return {row["id"]: row for row in map(json.loads, lines)}


def real(family: str, trace_id: str) -> ReplayTrace:
    row = _rows(FILES[family])[trace_id]
    trace = ReplayTrace.from_record(row)
    if not trace.thinking:  # LIMO, no markers and no heading: check the cues on its output
        trace = trace.model_copy(update={"thinking": row["output"]})
    return trace


@pytest.fixture(scope="module")
async def checker() -> AsyncIterator[EquivalenceChecker]:
    async with EquivalenceChecker(timeout_s=5.0) as built:
        yield built


async def judged(trace: ReplayTrace, unit: int, checker: EquivalenceChecker) -> Verdict:
    """The preset judge's verdict on one unit (thought or paragraph) of a real trace."""
    preset = preset_for(trace.family)
    config = SegmenterConfig(family=preset.family, paragraphs=preset.paragraphs)
    thought = segment(trace.thinking, config)[unit]
    judge = RuleJudge(checker, by_family=judge_configs())
    return await judge.reaches_answer(
        thought, JudgeContext(problem=trace.problem, family=preset.family)
    )


def test_every_trace_family_has_its_own_preset() -> None:
    models = ["QwQ-32B", "DeepSeek-R1-Distill-Qwen-32B", "Sky-T1-math-correct-5K-27B", "LIMO-32B"]
    assert [preset_for(family_for_model(m)).family for m in models] == [
        "qwq",
        "deepseek_r1",
        "sky_t1",
        "limo",
    ]
    assert preset_for("no-such-family") is PRESETS["generic"]


# Each family's cues on real excerpts: the concluding unit counts, the intermediate one (which
# the issue-6 TARGET bar took for an answer) does not.
@pytest.mark.parametrize(
    ("family", "trace_id", "unit", "answer"),
    [
        # "Alright, I'm confident. The answer is 540 meters per week."
        pytest.param("qwq", "gsm8k/0:qwq-32b", 10, "540", id="qwq-concludes"),
        # "So, the profit there would be 1.2% of $8,000." (the answer is 125)
        pytest.param("qwq", "gsm8k/3:qwq-32b", 4, None, id="qwq-intermediate"),
        # "So, I think I'm confident that the answer is 6 mph."
        pytest.param("deepseek_r1", "gsm8k/4:r1-distill-qwen-32b", 32, "6", id="r1-concludes"),
        # "... her overtime earnings are 5 hours multiplied by $12, totaling $60." (460)
        pytest.param("deepseek_r1", "gsm8k/1:r1-distill-qwen-32b", 1, None, id="r1-intermediate"),
        # Ronnie's money: "So, Ronnie has $2 left." before "Wait" (a verb, not "is", carries it);
        # "So Rissa has $12 left." before "But" is the other person's amount.
        pytest.param(
            "deepseek_r1", "gsm8k/286:r1-distill-qwen-32b", 11, "$2", id="r1-verb-concludes"
        ),
        pytest.param("deepseek_r1", "gsm8k/286:r1-distill-qwen-32b", 5, None, id="r1-someone-else"),
        # "So, 27 is the smallest perfect cube that is a multiple of 3." (last sentence)
        pytest.param(
            "sky_t1", "math500/6:test/number_theory/515.json", 1, "27", id="sky-concludes"
        ),
        # "... each internal side is shared between two triangles." after a perimeter formula
        pytest.param(
            "sky_t1", "math500/5:test/prealgebra/1622.json", 8, None, id="sky-intermediate"
        ),
        # LIMO writes no markers: "So, the answer is 3. Hmm."
        pytest.param("limo", "math500/5:limo-32b", 2, "3", id="limo-concludes"),
        # "Therefore, area of ACD is (AD * CD)/2." (the answer is 3840/289)
        pytest.param("limo", "math500/11:limo-32b", 3, None, id="limo-intermediate"),
    ],
)
async def test_family_cues_on_real_excerpts(
    family: str, trace_id: str, unit: int, answer: str | None, checker: EquivalenceChecker
) -> None:
    verdict = await judged(real(family, trace_id), unit, checker)
    if answer is None:
        assert not verdict.positive
    else:
        assert verdict.positive
        assert verdict.answer == answer


async def test_a_repeated_intermediate_quantity_does_not_trim(checker: EquivalenceChecker) -> None:
    # QwQ, GSM8K 37 (answer 280 ft): the croissants' 60 ft is re-derived thought after thought,
    # each time vouched for by "That's correct." - a pointer at a sub-result, not a stated
    # answer. The issue-6 judge took it for an answer, agreed on 60 and cut the trace there.
    subject = real("qwq", "gsm8k/37:qwq-32b")
    legacy = ReplayConfig(trimr=TrimRConfig(), paragraphs=False)
    presets = RuleJudge(checker, by_family=judge_configs())
    for judge, config in ((RuleJudge(checker), legacy), (presets, ReplayConfig())):
        outcome = await replay_trace(subject, judge=judge, checker=checker, config=config)
        assert outcome.answer_at_trim in (None, "280")
        assert outcome.correct_after


async def test_a_converged_qwq_trace_does_not_trip_underthinking(
    checker: EquivalenceChecker,
) -> None:
    # QwQ, GSM8K 30: 20+ short thoughts that keep agreeing. A raw thought count called that
    # "no convergence"; counting answer-bearing thoughts does not.
    subject = real("qwq", "gsm8k/30:qwq-32b")
    legacy = ReplayConfig(trimr=TrimRConfig(), paragraphs=False)
    before = await replay_trace(subject, judge=RuleJudge(checker), checker=checker, config=legacy)
    assert before.rule is TrimRule.UNDERTHINKING
    judge = RuleJudge(checker, by_family=judge_configs())
    after = await replay_trace(subject, judge=judge, checker=checker)
    assert after.rule is not TrimRule.UNDERTHINKING
    assert after.correct_after


def test_forced_answer_is_the_candidate_with_the_most_support() -> None:
    config = TrimRConfig(
        rules=frozenset({TrimRule.UNDERTHINKING}),
        underthink_max_thoughts=None,
        underthink_max_answers=4,
    )
    controller = TrimController(config)
    answers = ["12", "15", "12", "7"]  # never two in a row: no convergence
    for index, answer in enumerate(answers):
        controller.on_answer(index, Verdict(positive=True, score=1.0, answer=answer))
        for request in controller.take_consistency_requests():
            same = request.first_answer == request.second_answer
            controller.on_consistency(request, Verdict(positive=same, score=1.0))
    decision = controller.decision
    assert decision is not None
    assert decision.rule is TrimRule.UNDERTHINKING
    assert decision.answer == "12"  # twice; the latest ("7") once
    assert "4 answers >= 4" in decision.reason


def test_forced_answer_is_none_only_without_any_candidate() -> None:
    controller = TrimController(TrimRConfig(rules=frozenset({TrimRule.UNDERTHINKING})))
    assert controller.supported_answer is None
    controller.on_answer(0, Verdict(positive=False, score=0.25, answer="9"))
    assert controller.supported_answer == "9"


# -- grading must not lean on the labels ------------------------------------------------------


def synthetic(*, final: str, truth: str, correct: bool, thinking: str) -> ReplayTrace:
    return ReplayTrace(
        id="synthetic/0:qwq",
        model="QwQ-32B",
        dataset="gsm8k",
        problem="How many apples are left?",
        ground_truth=truth,
        thinking=thinking,
        final_answer=final,
        is_correct=correct,
        family="qwq",
    )


# Two paragraphs stating the same answer: the QwQ preset (M = 1, paragraphs) trims after them.
EARLY_THREE = (
    "I count the apples.\n\nSo the answer is 3.\n\nWait, so the answer is 3.\n\n"
    "Hmm, but one apple was eaten, so 2 are left.\n\nSo the answer is 2.\n\n"
)


@pytest.mark.parametrize(
    ("final", "truth", "correct", "after", "lost", "gained"),
    [
        # Correct trace cut at a wrong earlier answer: accuracy-after is not the trace's label.
        pytest.param("2", "2", True, False, 1, 0, id="correct-trace-loses"),
        # Wrong trace cut at an earlier answer that is right: graded against the ground truth.
        pytest.param("2", "3", False, True, 0, 1, id="wrong-trace-gains"),
    ],
)
async def test_accuracy_after_is_graded_not_copied_from_the_label(
    final: str,
    truth: str,
    correct: bool,
    after: bool,
    lost: int,
    gained: int,
    checker: EquivalenceChecker,
) -> None:
    subject = synthetic(final=final, truth=truth, correct=correct, thinking=EARLY_THREE)
    judge = RuleJudge(checker, by_family=judge_configs())
    report = await replay([subject], judge=judge, checker=checker)
    outcome = report.traces[0]
    assert outcome.rule is TrimRule.OVERTHINKING
    assert outcome.answer_at_trim == "3"
    assert outcome.correct_before is correct
    assert outcome.correct_after is after
    pooled = summarize(report, [subject]).pooled
    assert (pooled.lost, pooled.gained) == (lost, gained)
    assert pooled.accuracy_after == (100.0 if after else 0.0)


def test_oracle_bound_is_keyed_on_the_traces_own_answer_not_the_ground_truth() -> None:
    # A wrong trace: the ground truth (3) is named in the first paragraph, the trace's own
    # answer (2) in the last. Stopping at the first mention of the *trace's* answer saves
    # nothing; keyed on the ground truth it would cut after the first paragraph.
    thinking = "So the answer is 3.\n\nNo: one was eaten.\n\nSo the answer is 2.\n\n"
    subject = synthetic(final="2", truth="3", correct=False, thinking=thinking)
    bound = headroom([subject], mentions=1, paragraphs=True)
    assert bound.tokens_after == bound.tokens_before == count_word_pieces(thinking)
    assert bound.saved_pct == 0.0
    right = synthetic(final="3", truth="3", correct=True, thinking=thinking)
    cut = headroom([right], mentions=1, paragraphs=True)
    assert cut.tokens_after == count_word_pieces("So the answer is 3.\n\n")


async def test_summary_rows_carry_the_acceptance_fields(checker: EquivalenceChecker) -> None:
    subject = synthetic(final="3", truth="3", correct=True, thinking=EARLY_THREE)
    judge = RuleJudge(checker, by_family=judge_configs())
    report = await replay([subject], judge=judge, checker=checker, config=ReplayConfig())
    summary = summarize(report, [subject])
    fields = summary.pooled.model_dump()
    for name in (
        "traces",
        "thinking_tokens_before",
        "thinking_tokens_after",
        "accuracy_before",
        "accuracy_after",
        "lost",
        "gained",
        "per_rule",
    ):
        assert name in fields
    assert summary.pooled.per_rule["overthinking"].trims == 1
    assert set(summary.families) == {"qwq"}
    assert set(summary.groups) == {"QwQ-32B / gsm8k"}
    assert summary.pooled.oracle_saved_pct is not None
    assert summary.pooled.oracle_saved_pct > 0


async def test_qwq_preset_stops_at_its_first_stated_answer(checker: EquivalenceChecker) -> None:
    # QwQ, GSM8K 0: "Alright, I'm confident. The answer is 540 meters per week." ends the
    # paragraph the preset (M = 0) stops at; the verification that follows is what it saves.
    subject = real("qwq", "gsm8k/0:qwq-32b")
    judge = RuleJudge(checker, by_family=judge_configs())
    outcome = await replay_trace(subject, judge=judge, checker=checker)
    assert outcome.rule is TrimRule.OVERTHINKING
    assert "M = 0" in outcome.reason
    assert (outcome.answer_at_trim, outcome.correct_after) == ("540", True)
    assert outcome.tokens_at_trim < outcome.thinking_tokens


PENSION = "This means her annual pension will be $2,500.\n\n"
PROBLEM_16 = _rows(FILES["deepseek_r1"])["gsm8k/16:r1-distill-qwen-32b"]["problem"]


@pytest.mark.parametrize(
    ("text", "next_marker", "answer"),
    [
        # R1, GSM8K 16 (what will her annual pension be?): a conclusion about the asked
        # quantity right before R1 turns to re-check it counts; mid-thought only a stated
        # answer does.
        pytest.param(PENSION, "Wait", "$2,500", id="before-wait"),
        pytest.param(PENSION, None, None, id="mid-thought"),
        pytest.param(PENSION, "Hmm", "$2,500", id="before-hmm"),
        # "But" often doubts what came before (held-out R1 MATH-2189 "... = 8!." then "But"):
        # not a re-check marker.
        pytest.param(PENSION, "But", None, id="before-but"),
        pytest.param(PENSION, "Okay, so", None, id="before-a-new-attempt"),
        # In terms of an unknown ("D^2" in R1 on MATH-500 40), even before "Wait": a step.
        pytest.param(
            "This means her annual pension will be 0.5P.\n\n", "Wait", None, id="in-unknowns"
        ),
    ],
)
async def test_r1_thought_end_bar(
    text: str, next_marker: str | None, answer: str | None, checker: EquivalenceChecker
) -> None:
    judge = RuleJudge(checker, by_family=judge_configs())
    unit = Thought(index=0, start=0, end=len(text), text=text, next_marker=next_marker)
    context = JudgeContext(problem=PROBLEM_16, family="deepseek_r1")
    verdict = await judge.reaches_answer(unit, context)
    assert verdict.positive is (answer is not None)
    if answer is not None:
        assert verdict.answer == answer


async def test_unit_words_do_not_break_agreement(checker: EquivalenceChecker) -> None:
    judge = RuleJudge(checker)
    assert (await judge.consistent("5 times", "5")).positive
    assert judge.gradeable_answer("$36") == "36"


async def test_qwq_judge_ignores_an_answer_in_its_own_unknowns(checker: EquivalenceChecker) -> None:
    # QwQ, GSM8K 139 (answer 48): the expression it set up in its own N is not a stated answer.
    problem = _rows(FILES["qwq"])["gsm8k/139:qwq-32b"]["problem"]
    text = "So putting it all together, the final value is [(N + (N/2))/5] * (N - 12).\n\n"
    unit = Thought(index=0, start=0, end=len(text), text=text)
    judge = RuleJudge(checker, by_family=judge_configs())
    verdict = await judge.reaches_answer(unit, JudgeContext(problem=problem, family="qwq"))
    assert not verdict.positive


async def test_a_thought_that_vouches_for_its_own_value_confirms_nothing(
    checker: EquivalenceChecker,
) -> None:
    # R1, MATH-500 3: "So, 10% is correct." came after "... the future value is exactly
    # 66,200"; read as a bare confirmation it agreed with 66,200 and stopped the trace on it.
    text = "Alternatively, the quadratic gives the exact solution. So, 10% is correct.\n\n"
    unit = Thought(index=0, start=0, end=len(text), text=text)
    judge = RuleJudge(checker, by_family=judge_configs())
    verdict = await judge.reaches_answer(unit, JudgeContext(problem="", family="deepseek_r1"))
    assert not verdict.confirms
