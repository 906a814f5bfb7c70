"""The two judges behind `ThoughtJudge`: rules + equivalence, and Yes/No logprobs of an LLM."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pytest

from verifiers.answers import normalize_answer
from verifiers.intermediate import AnswerStrength
from verifiers.judges import (
    JudgeContext,
    LlmJudge,
    LlmJudgeConfig,
    PromptTemplate,
    RuleJudge,
    RuleJudgeConfig,
    ThoughtJudge,
    yes_probability,
)
from verifiers.segmentation import Thought

PROBLEM = "Find the smallest possible value of $a.$"
CONTEXT = JudgeContext(problem=PROBLEM)


class NormalizedComparer:
    """Unit-test stand-in for EquivalenceChecker: equal after normalisation."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def equivalent(self, gold: str, pred: str) -> bool:
        self.calls.append((gold, pred))
        return normalize_answer(gold) == normalize_answer(pred)


def thought(text: str, index: int = 0) -> Thought:
    return Thought(index=index, start=0, end=len(text), text=text)


@pytest.mark.parametrize(
    ("text", "positive", "answer", "confirms"),
    [
        pytest.param(r"So, the answer is \( a = 3 \).", True, "3", False, id="stated"),
        pytest.param(
            r"Therefore, the smallest value is \( a = 3 \).", True, "3", False, id="target"
        ),
        pytest.param(r"So \( x = -1 \).", False, "-1", False, id="weak-candidate-kept"),
        pytest.param("Let me try another approach.", False, None, False, id="nothing"),
        pytest.param("Yes, that checks out.", True, None, True, id="confirmation"),
    ],
)
async def test_rule_judge_reaches_answer(
    text: str, positive: bool, answer: str | None, confirms: bool
) -> None:
    verdict = await RuleJudge(NormalizedComparer()).reaches_answer(thought(text), CONTEXT)
    assert (verdict.positive, verdict.answer, verdict.confirms) == (positive, answer, confirms)
    assert verdict.reason


async def test_rule_judge_min_strength_and_confirmations_are_configurable() -> None:
    strict = RuleJudge(
        NormalizedComparer(),
        RuleJudgeConfig(min_strength=AnswerStrength.STATED, count_confirmations=False),
    )
    target = await strict.reaches_answer(thought(r"Therefore, the smallest is \(a = 3\)."), CONTEXT)
    assert not target.positive
    assert target.answer == "3"
    assert not (await strict.reaches_answer(thought("Yes, that checks out."), CONTEXT)).positive


async def test_rule_judge_consistency_asks_the_comparer() -> None:
    comparer = NormalizedComparer()
    judge: ThoughtJudge = RuleJudge(comparer)
    assert (await judge.consistent(r"\dfrac{1}{2}", r"\frac12")).positive
    assert not (await judge.consistent("3", "4")).positive
    assert comparer.calls == [(r"\dfrac{1}{2}", r"\frac12"), ("3", "4")]


async def test_batched_forms_match_single_calls() -> None:
    judge = RuleJudge(NormalizedComparer())
    items = [(thought("So, the answer is 3."), CONTEXT), (thought("Hmm."), CONTEXT)]
    many = await judge.reaches_answer_many(items)
    assert [v.positive for v in many] == [True, False]
    pairs = await judge.consistent_many([("3", "3"), ("3", "5")])
    assert [v.positive for v in pairs] == [True, False]


# -- LLM judge -------------------------------------------------------------------------------


class FakeVerifier:
    """Records prompts; answers with fixed top logprobs."""

    def __init__(self, logprobs: Mapping[str, float]) -> None:
        self.logprobs = dict(logprobs)
        self.prompts: list[str] = []

    async def __call__(self, prompt: str) -> Mapping[str, float]:
        self.prompts.append(prompt)
        return self.logprobs


@pytest.mark.parametrize(
    ("logprobs", "expected"),
    [
        pytest.param({"Yes": math.log(0.6), "No": math.log(0.2)}, 0.75, id="normalised"),
        pytest.param(
            {" yes": math.log(0.3), "Yes": math.log(0.3), "No": math.log(0.4)},
            0.6,
            id="variants-summed",
        ),
        pytest.param({"NO.": 0.0}, 0.0, id="only-no"),
        pytest.param({"Maybe": -0.1, "The": -2.0}, None, id="neither"),
        pytest.param({}, None, id="empty"),
    ],
)
def test_yes_probability(logprobs: dict[str, float], expected: float | None) -> None:
    got = yes_probability(logprobs)
    assert got == pytest.approx(expected) if expected is not None else got is None


async def test_llm_judge_decides_from_logprobs() -> None:
    verifier = FakeVerifier({"Yes": math.log(0.7), "No": math.log(0.3)})
    judge = LlmJudge(verifier)
    text = "Plugging in gives 0 for a = 3.\n\nTherefore the smallest value is a = 3."
    verdict = await judge.reaches_answer(thought(text), CONTEXT)
    assert verdict.positive
    assert verdict.score == pytest.approx(0.7)
    assert verdict.answer is not None
    assert verdict.answer.endswith("smallest value is a = 3.")
    prompt = verifier.prompts[0]
    assert PROBLEM in prompt
    assert prompt.rstrip().endswith("Reply:")
    verifier.logprobs = {"Yes": math.log(0.2), "No": math.log(0.8)}
    assert not (await judge.consistent("a = 3", "a = 4")).positive


async def test_llm_judge_threshold_and_undecided_token() -> None:
    strict = LlmJudge(
        FakeVerifier({"Yes": math.log(0.6), "No": math.log(0.4)}),
        LlmJudgeConfig(yes_threshold=0.8),
    )
    assert not (await strict.reaches_answer(thought("So a = 3."), CONTEXT)).positive
    lost = LlmJudge(FakeVerifier({"Hmm": 0.0}))
    verdict = await lost.consistent("3", "3")
    assert not verdict.positive
    assert "neither" in verdict.reason


async def test_prompts_share_a_long_prefix_for_the_prefix_cache() -> None:
    verifier = FakeVerifier({"Yes": 0.0})
    judge = LlmJudge(verifier)
    await judge.reaches_answer(thought("So a = 3.", 0), JudgeContext(problem="Problem one?"))
    await judge.reaches_answer(thought("Hence 7.", 1), JudgeContext(problem="Problem two?"))
    await judge.consistent("a = 3", "3")
    await judge.consistent("7", "8")
    reaches, consistent = judge.prompts
    for template, (first, second) in (
        (reaches, verifier.prompts[:2]),
        (consistent, verifier.prompts[2:]),
    ):
        prefix = template.shared_prefix
        assert len(prefix) > 300  # instructions + few-shot examples come first
        assert first.startswith(prefix)
        assert second.startswith(prefix)
        assert "Reply: Yes" in prefix
        assert "Reply: No" in prefix


def test_prompt_slots_must_all_be_filled(tmp_path: Path) -> None:
    (tmp_path / "reaches_answer.txt").write_text("Q {{problem}} T {{thought}}\nReply:")
    template = PromptTemplate.load("reaches_answer", tmp_path)
    assert template.slots == frozenset({"problem", "thought"})
    assert template.render(problem="p {x}", thought="t") == "Q p {x} T t\nReply:"
    with pytest.raises(ValueError, match="slots"):
        template.render(problem="p")


def test_packaged_prompts_have_the_expected_slots() -> None:
    assert PromptTemplate.load("reaches_answer").slots == frozenset({"problem", "thought"})
    assert PromptTemplate.load("consistent").slots == frozenset({"first", "second"})
