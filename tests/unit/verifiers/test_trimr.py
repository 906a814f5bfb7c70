"""The TrimR state machine: each rule fires and does not fire; verdicts late and out of order."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from verifiers.judges import Verdict
from verifiers.segmentation import Thought
from verifiers.trim_replay import ReplayTrace
from verifiers.trimr import (
    ConsistencyRequest,
    InterventionConfig,
    TrimController,
    TrimDecision,
    TrimRConfig,
    TrimRule,
    UnderthinkMode,
    build_intervention,
)

SKY = (
    Path(__file__).resolve().parents[3]
    / "evals/data/traces/skythought_sky-t1-math-correct-5k-27b.jsonl"
)

CONFIRM = "<confirms>"  # scripted stand-in for a bare "Yes, that checks out." thought
WEAK = "weak:"  # prefix: a candidate below the judge's bar ("= 5" about an unnamed quantity)
OVERTHINKING_ONLY = TrimRConfig(rules=frozenset({TrimRule.OVERTHINKING}))


def thought(index: int) -> Thought:
    return Thought(index=index, start=10 * index, end=10 * index + 10, text="x" * 10)


def verdict(answer: str | None) -> Verdict:
    if answer == CONFIRM:
        return Verdict(positive=True, score=0.5, confirms=True)
    if answer is None:
        return Verdict(positive=False, score=0.0)
    if answer.startswith(WEAK):
        return Verdict(positive=False, score=0.25, answer=answer.removeprefix(WEAK))
    return Verdict(positive=True, score=1.0, answer=answer)


def resolve(controller: TrimController) -> TrimDecision | None:
    """Answer every pending comparison (string equality), until none is pending."""
    decision = controller.decision
    while requests := controller.take_consistency_requests():
        for request in requests:
            same = request.first_answer == request.second_answer
            decision = controller.on_consistency(request, Verdict(positive=same, score=1.0))
    return decision


def run(
    answers: Sequence[str | None],
    config: TrimRConfig = OVERTHINKING_ONLY,
    *,
    order: Sequence[int] | None = None,
) -> TrimDecision | None:
    """Close one thought per answer, then deliver the verdicts in `order`."""
    controller = TrimController(config)
    for index in range(len(answers)):
        controller.observe_thought(thought(index))
    for index in order if order is not None else range(len(answers)):
        controller.on_answer(index, verdict(answers[index]))
        resolve(controller)
    return controller.decision


@pytest.mark.parametrize(
    ("answers", "fires_at", "answer"),
    [
        pytest.param(["5", "5", "5"], 2, "5", id="three-agree"),
        pytest.param(["5", "5"], None, None, id="two-agree-is-not-enough"),
        pytest.param(["5", None, "5", None, "5"], 4, "5", id="answerless-thoughts-neutral"),
        pytest.param(["5", "5", "7", "7"], None, None, id="mismatch-resets"),
        pytest.param(["5", "5", "7", "7", "7"], 4, "7", id="new-run-after-reset"),
        pytest.param(["5", "5", "7", "5"], None, None, id="outlier-resets-by-default"),
        pytest.param(["3", "5", "5", CONFIRM], 3, "5", id="confirmation-agrees"),
        pytest.param([CONFIRM, "5", "5"], None, None, id="confirmation-without-answer"),
        pytest.param([None] * 6, None, None, id="no-answers"),
    ],
)
def test_overthinking(answers: list[str | None], fires_at: int | None, answer: str | None) -> None:
    decision = run(answers)
    if fires_at is None:
        assert decision is None
        return
    assert decision is not None
    assert (decision.rule, decision.thought_index, decision.answer) == (
        TrimRule.OVERTHINKING,
        fires_at,
        answer,
    )
    assert "2 consecutive equivalent answers" in decision.reason


@pytest.mark.parametrize(
    ("answers", "fires_at"),
    [
        pytest.param(["5", "5", "7", "5"], 3, id="one-outlier-skipped"),
        pytest.param(["5", "5", "7", "8"], None, id="outlier-then-mismatch"),
        pytest.param(["5", "5", "7", "7", "7"], 4, id="outlier-starts-the-next-run"),
        pytest.param(["5", "7", "5", "5"], None, id="no-run-to-protect"),
    ],
)
def test_tolerate_one_outlier(answers: list[str | None], fires_at: int | None) -> None:
    config = OVERTHINKING_ONLY.model_copy(update={"tolerate_one_outlier": True})
    decision = run(answers, config)
    assert (decision.thought_index if decision else None) == fires_at


@pytest.mark.parametrize(
    ("answers", "fires_at"),
    [
        pytest.param(["5", "5", "7", "5", "5"], 4, id="one-outlier"),
        pytest.param(["5", "5", "7", "5", "8", "5"], None, id="second-outlier-resets"),
    ],
)
def test_only_one_outlier_per_run(answers: list[str | None], fires_at: int | None) -> None:
    config = OVERTHINKING_ONLY.model_copy(update={"tolerate_one_outlier": True, "overthink_m": 3})
    decision = run(answers, config)
    assert (decision.thought_index if decision else None) == fires_at


W5, W7 = WEAK + "5", WEAK + "7"


@pytest.mark.parametrize(
    ("answers", "fires_at", "without"),
    [
        pytest.param(["5", W5, W5], 2, None, id="weak-agreements-extend-a-run"),
        pytest.param(["5", W7, "5", W5], 3, None, id="weak-disagreement-is-ignored"),
        pytest.param(["5", "5", W7, "5"], 3, 3, id="weak-disagreement-does-not-reset"),
        pytest.param([W5, "5", W5], None, None, id="weak-never-starts-a-run"),
        pytest.param(["5", "7", W7, W7], 3, None, id="run-after-reset"),
        pytest.param(["5", "5", "5"], 2, 2, id="strong-runs-unchanged"),
    ],
)
def test_weak_agreement(
    answers: list[str | None], fires_at: int | None, without: int | None
) -> None:
    config = OVERTHINKING_ONLY.model_copy(update={"weak_agreement": True})
    decision = run(answers, config)
    assert (decision.thought_index if decision else None) == fires_at
    if decision is not None:
        assert fires_at is not None
        assert decision.answer == (answers[fires_at] or "").removeprefix(WEAK)
    baseline = run(answers)
    assert (baseline.thought_index if baseline else None) == without


def test_weak_agreement_with_an_outlier() -> None:
    config = OVERTHINKING_ONLY.model_copy(
        update={"weak_agreement": True, "tolerate_one_outlier": True}
    )
    decision = run(["5", W5, "7", W5], config)
    assert decision is not None
    assert (decision.thought_index, decision.answer) == (3, "5")
    assert "one outlier skipped" in decision.reason


def test_forced_answer_ignores_weak_links() -> None:
    config = TrimRConfig(
        rules=frozenset({TrimRule.UNDERTHINKING}), weak_agreement=True, underthink_max_thoughts=3
    )
    decision = run(["5", W7, None], config)
    assert decision is not None
    assert decision.answer == "5"


def test_overthink_m_is_the_number_of_equivalent_pairs() -> None:
    config = OVERTHINKING_ONLY.model_copy(update={"overthink_m": 1})
    assert run(["4", "4"], config) is not None
    assert run(["4", "5"], config) is None


@pytest.mark.parametrize(
    "order",
    [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [0, 1, 2, 3, 4]],
    ids=["reversed", "shuffled", "in-order"],
)
def test_answer_verdicts_in_any_order_give_the_same_decision(order: list[int]) -> None:
    decision = run(["5", "5", "7", "7", "7"], order=order)
    assert decision is not None
    assert (decision.rule, decision.thought_index, decision.answer) == (
        TrimRule.OVERTHINKING,
        4,
        "7",
    )


def test_late_consistency_verdicts_out_of_order() -> None:
    controller = TrimController(OVERTHINKING_ONLY)
    for index, answer in enumerate(["5", "5", "5"]):
        controller.observe_thought(thought(index))
        assert controller.on_answer(index, verdict(answer)) is None
    requests = controller.take_consistency_requests()
    assert [(r.first_thought, r.second_thought) for r in requests] == [(0, 1), (1, 2)]
    assert controller.take_consistency_requests() == []  # each request is handed out once
    controller.observe_text("y" * 500)  # the branch keeps decoding meanwhile
    assert controller.on_consistency(requests[1], Verdict(positive=True, score=1.0)) is None
    decision = controller.on_consistency(requests[0], Verdict(positive=True, score=1.0))
    assert decision is not None
    assert decision.rule is TrimRule.OVERTHINKING
    assert decision.at_char == 500  # it fires where the stream is when the verdict lands


def test_a_decision_is_final() -> None:
    controller = TrimController(OVERTHINKING_ONLY)
    for index in range(3):
        controller.observe_thought(thought(index))
        controller.on_answer(index, verdict("5"))
    first = resolve(controller)
    assert first is not None
    assert controller.on_answer(3, verdict("9")) is first
    assert controller.observe_text("more") is first
    assert controller.observe_thought(thought(9)) is first
    request = ConsistencyRequest(
        first_thought=0, second_thought=3, first_answer="5", second_answer="9"
    )
    assert controller.on_consistency(request, Verdict(positive=False, score=0.0)) is first


def test_disabled_rule_does_not_fire() -> None:
    config = TrimRConfig(rules=frozenset({TrimRule.REPETITION}))
    assert run(["5", "5", "5", "5"], config) is None


# -- underthinking ---------------------------------------------------------------------------


def underthinking(**update: object) -> TrimRConfig:
    return TrimRConfig(rules=frozenset({TrimRule.UNDERTHINKING})).model_copy(update=update)


def test_underthinking_after_too_many_thoughts() -> None:
    controller = TrimController(underthinking(underthink_max_thoughts=3))
    for i in range(2):
        assert controller.observe_thought(thought(i)) is None
        assert controller.on_answer(i, verdict(None)) is None
    assert controller.observe_thought(thought(2)) is None  # not judged yet: no evidence
    decision = controller.on_answer(2, verdict(None))
    assert decision is not None
    assert decision.rule is TrimRule.UNDERTHINKING
    assert decision.answer is None
    assert "3 thoughts >= 3" in decision.reason


def test_no_verdicts_no_underthinking() -> None:
    """A verifier that is down (no verdicts at all) must not make every branch 'unconverged'."""
    controller = TrimController(underthinking(underthink_max_thoughts=3))
    for i in range(10):
        assert controller.observe_thought(thought(i)) is None


def test_underthinking_after_the_budget_share() -> None:
    controller = TrimController(underthinking(underthink_ratio=0.5), token_budget=100)
    assert controller.observe_text("abc", token_count=49) is None
    decision = controller.observe_text("d", token_count=50)
    assert decision is not None
    assert decision.at_token == 50
    assert "50 tokens >= 0.5 x 100 budget" in decision.reason


def test_budget_counts_word_pieces_without_engine_counts() -> None:
    controller = TrimController(underthinking(underthink_ratio=0.5), token_budget=10)
    assert controller.observe_text("one two three four ") is None
    assert controller.observe_text("five six ") is not None  # 5 pieces >= 0.5 x 10


def test_underthinking_all_mode_needs_both_limits() -> None:
    config = underthinking(underthink_mode=UnderthinkMode.ALL, underthink_max_thoughts=2)
    controller = TrimController(config, token_budget=100)
    for i in range(2):
        controller.observe_thought(thought(i))
        assert controller.on_answer(i, verdict(None)) is None  # thoughts, but no budget share
    assert controller.observe_text("x", token_count=60) is not None


def test_no_budget_disables_the_share_limit() -> None:
    controller = TrimController(underthinking(underthink_max_thoughts=1000))
    assert controller.observe_text("word " * 5000) is None


def test_underthinking_waits_while_answers_converge_and_fires_on_a_mismatch() -> None:
    config = TrimRConfig(
        rules=frozenset({TrimRule.OVERTHINKING, TrimRule.UNDERTHINKING}),
        overthink_m=3,
        underthink_max_thoughts=3,
    )
    controller = TrimController(config)
    for index, answer in enumerate(["5", "5"]):
        controller.observe_thought(thought(index))
        controller.on_answer(index, verdict(answer))
        assert resolve(controller) is None
    assert controller.observe_thought(thought(2)) is None  # at the limit, but converging
    controller.on_answer(2, verdict("7"))
    assert controller.decision is None  # "7" vs "5" not compared yet: no verdict, no action
    decision = resolve(controller)
    assert decision is not None
    assert decision.rule is TrimRule.UNDERTHINKING
    assert decision.answer == "5"  # the forced answer: "5" has two thoughts behind it, "7" one


def test_forced_answer_falls_back_to_the_latest_weak_candidate() -> None:
    controller = TrimController(underthinking(underthink_max_thoughts=3))
    controller.observe_thought(thought(0))
    controller.on_answer(0, Verdict(positive=False, score=0.25, answer="12"))
    controller.observe_thought(thought(1))
    controller.on_answer(1, verdict(None))
    controller.observe_thought(thought(2))
    decision = controller.on_answer(2, verdict(None))
    assert decision is not None
    assert decision.answer == "12"


# -- repetition ------------------------------------------------------------------------------


def test_repetition_fires_on_a_real_loop() -> None:
    row = next(
        json.loads(line)
        for line in SKY.read_text(encoding="utf-8").splitlines()
        if '"math500/10:test/number_theory/1032.json"' in line
    )
    text = ReplayTrace.from_record(row).thinking
    controller = TrimController(TrimRConfig(rules=frozenset({TrimRule.REPETITION})))
    decision = None
    for at in range(0, len(text), 16):
        decision = controller.observe_text(text[at : at + 16])
        if decision is not None:
            break
    assert decision is not None
    assert decision.rule is TrimRule.REPETITION
    assert decision.at_char < len(text) // 2
    assert "48-piece n-gram occurred 5 times" in decision.reason


def test_every_trigger_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="verifiers.trimr")
    controller = TrimController(underthinking(underthink_max_thoughts=1), name="req-1/b0")
    controller.observe_thought(thought(0))
    controller.on_answer(0, verdict(None))
    assert "trim underthinking [req-1/b0]" in caplog.text
    assert "no convergence after 1 thoughts >= 1" in caplog.text


# -- intervention ----------------------------------------------------------------------------


def test_mild_intervention_closes_thinking_and_cues_the_answer() -> None:
    text = build_intervention(TrimRule.OVERTHINKING)
    assert text == "\n\n</think>\n\n**Final Answer**\n\n"


@pytest.mark.parametrize("rule", [TrimRule.UNDERTHINKING, TrimRule.REPETITION])
def test_forceful_intervention_says_so_first(rule: TrimRule) -> None:
    config = InterventionConfig(close_marker="<|end_of_thought|>")
    text = build_intervention(rule, config)
    assert text.index("thought about this long enough") < text.index("<|end_of_thought|>")
    assert text.endswith("**Final Answer**\n\n")


def test_tag_less_models_get_no_close_marker() -> None:
    assert "</think>" not in build_intervention(
        TrimRule.OVERTHINKING, InterventionConfig(close_marker="")
    )


@pytest.mark.parametrize(
    "update",
    [
        {"overthink_m": -1},
        {"underthink_ratio": 0.0},
        {"underthink_ratio": 1.5},
        {"underthink_max_thoughts": 0},
    ],
    ids=["m", "ratio-zero", "ratio-above-one", "thoughts"],
)
def test_config_bounds(update: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        TrimRConfig(**update)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answers", "fires_at"),
    [
        pytest.param([None, "weak:3", "5", "5"], 2, id="first-answer-over-the-bar"),
        pytest.param([CONFIRM, None], None, id="a-confirmation-alone-is-no-answer"),
        pytest.param(["weak:3", None], None, id="a-weak-candidate-never-stops"),
    ],
)
def test_m_zero_stops_at_the_first_answer(answers: list[str | None], fires_at: int | None) -> None:
    decision = run(answers, OVERTHINKING_ONLY.model_copy(update={"overthink_m": 0}))
    if fires_at is None:
        assert decision is None
        return
    assert decision is not None
    assert (decision.thought_index, decision.answer) == (fires_at, answers[fires_at])
    assert "M = 0" in decision.reason
