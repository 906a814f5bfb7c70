"""Signals of an answer: only what the answer and the problem say."""

from __future__ import annotations

import math

import pytest

from policies.answer_signals import (
    ANSWER_SIGNAL_NAMES,
    AnswerView,
    answer_signals,
    signal_vector,
)

PROBLEM = "Terry eats 2 yogurts a day. They are 4 for $5.00. How much does he spend over 30 days?"


def view(text: str, answer: str | None, **kw: object) -> AnswerView:
    return AnswerView(problem=PROBLEM, text=text, answer=answer, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "answer", "expected"),
    [
        ("So he spends \\(\\boxed{75}\\).", "75", {"boxed": 1.0, "no_answer": 0.0}),
        (
            "Therefore, Terry spends $75.00 on yogurt over 30 days.",
            None,
            {"boxed": 0.0, "no_answer": 1.0, "result_from_problem": 1.0, "conclusion": 1.0},
        ),
        ("The answer is 75.", "75", {"answer_phrase": 1.0, "result_from_problem": 0.0}),
        ("It costs approximately 75.5, assuming a discount.", None, {"hedges": math.log1p(2)}),
        ("Wait, that is a mistake. Let's recheck: 75.", None, {"self_corrections": math.log1p(3)}),
        ("The difference is \\boxed{-25}.", "-25", {"result_negative": 1.0}),
        ("x = 1.5, so \\boxed{1.5}", "1.5", {"result_not_integer": 1.0}),
        ("\\boxed{3} or \\boxed{4}", "4", {"several_boxed": 1.0}),
        (
            "\\boxed{\\{2, -1-i, f(1, 2)\\}}",
            "\\{2, -1-i, f(1, 2)\\}",
            {"result_parts": math.log(3)},
        ),
    ],
    ids=[
        "boxed",
        "unboxed-last-number-from-problem",
        "answer-phrase",
        "hedges",
        "self-corrections",
        "negative",
        "not-integer",
        "several-boxed",
        "several-parts",
    ],
)
def test_signals_of_an_answer(text: str, answer: str | None, expected: dict[str, float]) -> None:
    got = answer_signals(view(text, answer))
    assert set(got) == set(ANSWER_SIGNAL_NAMES)
    assert {k: got[k] for k in expected} == pytest.approx(expected)


def test_a_refuted_claim_is_a_signal() -> None:
    refuted = ("t = 2 does not solve t^{3} - 4 t - 4 = 0",)
    assert answer_signals(view("\\boxed{2}", "2", refuted_claims=refuted))["claims_refuted"] == 1.0
    assert answer_signals(view("\\boxed{2}", "2"))["claims_refuted"] == 0.0


def test_ambiguous_last_line_counts_its_numbers() -> None:
    one = answer_signals(view("He spends 75 dollars.", None))["last_line_numbers"]
    two = answer_signals(view("He spends $75.00 over 30 days.", None))["last_line_numbers"]
    assert (one, two) == (pytest.approx(math.log1p(1)), pytest.approx(math.log1p(2)))


def test_a_looping_answer_repeats_its_lines() -> None:
    loop = "\n".join(["\\[ 7x = 0 \\]  again"] * 20)
    assert answer_signals(view(loop, None))["repetition"] == pytest.approx(0.95)
    assert answer_signals(view("a line here\nanother one\nthird one!\nfourth one", None))[
        "repetition"
    ] == pytest.approx(0.0)


def test_length_counts_the_thinking_too() -> None:
    short = answer_signals(view("75", "75"))
    thought = answer_signals(view("75", "75", thinking_chars=5000))
    assert thought["log_chars"] > short["log_chars"] + 5
    assert thought["length_ratio"] > short["length_ratio"]


@pytest.mark.parametrize(
    ("agrees", "agreement", "disagrees"),
    [((), 0.0, 0.0), ((True,), 1.0, 0.0), ((False,), 0.0, 1.0), ((True, False), 0.5, 0.0)],
    ids=["first-level", "agrees", "disagrees", "half"],
)
def test_agreement_with_cheaper_answers(
    agrees: tuple[bool, ...], agreement: float, disagrees: float
) -> None:
    earlier = tuple("75" for _ in agrees)
    got = answer_signals(view("\\boxed{75}", "75", earlier=earlier, agrees=agrees))
    assert (got["agreement"], got["disagrees_with_all"]) == (agreement, disagrees)


def test_signal_vector_names_missing_signals() -> None:
    with pytest.raises(KeyError, match="nope"):
        signal_vector({"boxed": 1.0}, ("boxed", "nope"))
    assert signal_vector({"a": 1.0, "b": 2.0}, ("b", "a")).tolist() == [2.0, 1.0]
