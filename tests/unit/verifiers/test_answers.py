"""Answer extraction and normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifiers.answers import (
    extract_final_answer,
    find_boxed,
    normalize_answer,
    strip_math_delimiters,
    strip_thinking,
)

TRACES = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(r"so \boxed{42}.", "42", id="boxed"),
        pytest.param(r"\boxed{\frac{1}{2}}", r"\frac{1}{2}", id="nested-braces"),
        pytest.param(r"\boxed{\sqrt{\frac{a}{b^{2}}}} done", r"\sqrt{\frac{a}{b^{2}}}", id="deep"),
        pytest.param(r"\fbox{7}", "7", id="fbox"),
        pytest.param(r"first \boxed{1}, then \boxed{2}", "2", id="last-wins"),
        pytest.param(r"\boxed{\{1,2\}}", r"\{1,2\}", id="escaped-braces"),
        pytest.param(r"\boxed{\left\{ x \right.}", r"\left\{ x \right.", id="unbalanced-escaped"),
        pytest.param(r"\boxed{3} and cut off \boxed{\frac{1}{", "3", id="unclosed-ignored"),
        pytest.param(r"$\boxed 5$", "5", id="spaced-form"),
        pytest.param(r"\boxed{} \boxed{ 9 }", "9", id="empty-skipped-stripped"),
        pytest.param(r"The answer is 3, but \boxed{4}", "4", id="boxed-beats-phrase"),
        pytest.param(r"The final answer is $\frac{1}{2}$.", r"\frac{1}{2}", id="phrase-math"),
        pytest.param("Thus the answer is 42.", "42", id="phrase-plain"),
        pytest.param("The answer is 3.5. Done", "3.5", id="phrase-decimal"),
        pytest.param(r"The answer is: \(x+1\)", "x+1", id="phrase-paren-math"),
        pytest.param("**Final Answer**\n\n12\n", "12", id="bold-heading"),
        pytest.param("**Final Answer:** 3.5 meters", "3.5 meters", id="bold-inline"),
        pytest.param("answer: 7\nlater the answer is 8", "8", id="last-phrase"),
        pytest.param("Answer: (C)", "C", id="choice-parens"),
        pytest.param("The answer is B", "B", id="choice-bare"),
        pytest.param("The answer is B. It follows from ...", "B", id="choice-period"),
        pytest.param(r"The answer is $\text{(D)}$", "D", id="choice-text"),
        pytest.param("The answer is A + B", "A + B", id="not-a-choice"),
        pytest.param("so the correct option is (E)", "E", id="option-phrase"),
        pytest.param("I pick choice b", "B", id="choice-phrase-lower"),
        pytest.param("I computed 5 and then 6.", None, id="nothing"),
        pytest.param("", None, id="empty"),
        pytest.param("The answer is", None, id="phrase-without-answer"),
        pytest.param("So the answer is not obvious yet.", None, id="phrase-prose"),
        pytest.param("The answer is the sum of the roots.", None, id="phrase-long-prose"),
        pytest.param("The answer is yes.", "yes", id="phrase-word"),
        pytest.param("The answer is 12 because 3 * 4 = 12.", "12", id="phrase-because"),
        pytest.param("The answer is Evelyn Smith", "Evelyn Smith", id="phrase-name"),
        pytest.param("The answer is a", "a", id="phrase-variable"),
    ],
)
def test_extract_final_answer(text: str, expected: str | None) -> None:
    assert extract_final_answer(text) == expected


def test_find_boxed_lists_all_in_order() -> None:
    assert find_boxed(r"\boxed{1} x \fbox{2} \boxed{\frac{3}{4}}") == ["1", "2", r"\frac{3}{4}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "<think>a \\boxed{1}</think>The answer is \\boxed{2}",
            "The answer is \\boxed{2}",
            id="closed",
        ),
        pytest.param("a</think>b</think>c", "c", id="last-close"),
        pytest.param("<think>still thinking \\boxed{1}", "", id="unclosed"),
        pytest.param("no markers \\boxed{3}", "no markers \\boxed{3}", id="untagged"),
        pytest.param("prompt opened it</think>\\boxed{4}", "\\boxed{4}", id="open-in-prompt"),
    ],
)
def test_strip_thinking(text: str, expected: str) -> None:
    assert strip_thinking(text) == expected


def test_strip_thinking_custom_markers() -> None:
    text = "<|begin_of_thought|>x<|end_of_thought|>y"
    assert (
        strip_thinking(text, open_marker="<|begin_of_thought|>", close_marker="<|end_of_thought|>")
        == "y"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("$5$", "5", id="dollars"),
        pytest.param(r"\[ x \]", "x", id="display"),
        pytest.param("$a$ and $b$", "$a$and$b$", id="two-spans-kept"),
        pytest.param(r"\dfrac{1}{2}", r"\frac{1}{2}", id="dfrac"),
        pytest.param(r"\tfrac12", r"\frac{1}{2}", id="tfrac-short"),
        pytest.param(r"\frac12", r"\frac{1}{2}", id="frac-short"),
        pytest.param(r"\frac{a}2", r"\frac{a}{2}", id="frac-short-second"),
        pytest.param(r"\sqrt2", r"\sqrt{2}", id="sqrt-short"),
        pytest.param(r"90^\circ", "90", id="degrees"),
        pytest.param(r"90^{\circ}", "90", id="degrees-braced"),
        pytest.param("45°", "45", id="degree-sign"),
        pytest.param(r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", id="left-right"),
        pytest.param(r"\left.\frac{x}{2}\right|", r"\frac{x}{2}|", id="left-dot"),
        pytest.param(r"x \leftarrow y", r"x\leftarrow y", id="leftarrow-kept"),
        pytest.param(r"\text{(B)}", "B", id="text-choice"),
        pytest.param(r"\textbf{Evelyn}", "Evelyn", id="textbf"),
        pytest.param(r"5\text{ cm}", "5cm", id="unit-kept"),
        pytest.param(r"\mbox{a {b} c}", "a{b}c", id="nested-wrapper"),
        pytest.param(r"1,\!000", "1000", id="thin-space-thousands"),
        pytest.param("1,000,000", "1000000", id="thousands"),
        pytest.param("1,2", "1,2", id="list-not-thousands"),
        pytest.param(r"\$18.90", "18.90", id="currency"),
        pytest.param("5.", "5", id="trailing-period"),
        pytest.param(r"\pi r^2", r"\pi r^2", id="command-space-kept"),
        pytest.param(r"2 \cdot 3", r"2\cdot3", id="command-space-dropped"),
        pytest.param(r"\boxed{7}", "7", id="boxed-unwrapped"),
        pytest.param(r"a \\ b", r"a\\b", id="row-break-kept"),
        pytest.param(r"1,\ -2", "1,-2", id="control-space"),
        pytest.param("(c)", "c", id="paren-letter"),
        pytest.param(r"50\%", r"50\%", id="percent-kept"),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("raw", ["x", r"\frac{1}{2}", "1,2", r"(3,\frac{\pi}{2})", "A", r"\{1,2\}"])
def test_normalize_is_idempotent(raw: str) -> None:
    once = normalize_answer(raw)
    assert normalize_answer(once) == once


def test_strip_math_delimiters_nested() -> None:
    assert strip_math_delimiters(r"$$\(x\)$$") == "x"


def _sky_t1_rows(limit: int) -> list[dict[str, object]]:
    path = TRACES / "skythought_sky-t1-math-correct-5k-27b.jsonl"
    rows = [json.loads(line) for line in path.open()]
    keep = [r for r in rows if r["dataset"] == "math500" and r["complete"] and r["is_correct"]]
    return keep[:limit]


def test_real_traces_have_an_answer_after_thinking() -> None:
    """Of the first 50 complete, correct Sky-T1 MATH-500 traces, two have no answer after the
    thinking: one was cut off in its solution (the boxed answer is only in the thinking), one
    ends with a displayed `tan A = 2` and no answer phrase."""
    rows = _sky_t1_rows(50)
    missing = []
    for row in rows:
        markers = row["thinking_delimiters"]
        assert isinstance(markers, list)
        text = strip_thinking(
            str(row["output"]), open_marker=str(markers[0]), close_marker=str(markers[1])
        )
        if extract_final_answer(text) is None:
            missing.append(row["id"])
    assert missing == [
        "math500/25:test/intermediate_algebra/1388.json",
        "math500/45:test/geometry/178.json",
    ]
