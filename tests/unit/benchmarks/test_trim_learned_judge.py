"""The learned-judge estimate: labelled units of a real trace, the stop simulation, the fit."""

from __future__ import annotations

import pytest

from benchmarks.trim_learned_judge import (
    _HISTORY,
    _WIDTH,
    Unit,
    fit_probabilities,
    last_number,
    simulate,
    trace_units,
)
from verifiers.answer_text import answer_value, is_value
from verifiers.judges import RuleJudge
from verifiers.trim_presets import judge_configs
from verifiers.trim_replay import ReplayTrace

# QwQ-32B on GSM8K (evals/data/traces, gsm8k/33:qwq-32b): its whole thinking.
_QWQ = (
    "Okay, so the problem says that Joseph's expenditure in May was $500. Then in June, his "
    "expenditure was $60 less. We need to find the total expenditure for both months. Hmm, let "
    "me think step by step.\n\n"
    "First, May's expenditure is straightforward\u2014it's given as $500. Now, June's "
    "expenditure is a bit trickier because it's $60 less than May's. So, I guess I need to "
    "subtract $60 from May's amount to get June's. Let me write that down.\n\n"
    "May: $500\n\n"
    "June: May's amount minus $60. So that would be $500 - $60. Let me calculate that. 500 "
    "minus 60 is... 500 minus 50 is 450, and then minus 10 more would be 440. So June's "
    "expenditure is $440.\n\n"
    "Now, to find the total expenditure for both months, I need to add May and June's "
    "expenditures together. That would be $500 + $440. Let me add those. 500 plus 400 is 900, "
    "and then plus 40 more is 940. So the total should be $940.\n\n"
    "Wait, let me check my calculations again to make sure I didn't make a mistake. May is 500, "
    "June is 500 - 60 = 440. Adding them: 500 + 440. 500 + 400 is 900, and 40 more makes 940. "
    "Yeah, that seems right.\n\n"
    "Alternatively, maybe I can think of it another way. If June is $60 less than May, then the "
    "total expenditure is May plus May minus $60. So that's 500 + (500 - 60) = 500 + 440 = 940. "
    "Yep, same result.\n\n"
    "I think that's correct. So the total expenditure for May and June is $940.\n"
)
QWQ = ReplayTrace(
    id="gsm8k/33:qwq-32b",
    model="QwQ-32B",
    dataset="gsm8k",
    problem="The expenditure of Joseph in May was $500. In June, his expenditure was $60 less. "
    "How much was his total expenditure for those two months?",
    ground_truth="940",
    thinking=_QWQ,
    final_answer="940",
    is_correct=True,
    family="qwq",
)
# DeepSeek-R1-Distill-Llama-8B on MATH (MATH-2236), three paragraphs: the tens-place count of
# 4's (40) is a sub-result, restated by the re-check; the answer is 90.
R1 = ReplayTrace(
    id="MATH-2236",
    model="deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
    dataset="math_hendrycks",
    problem="Each page number of a 488-page book is printed one time in the book.  The first "
    "page is page 1 and the last page is page 488. When printing all of the page numbers, how "
    "many more 4's are printed than 8's?",
    ground_truth="90",
    thinking=(
        "Therefore, summing up the tens place for 3-digit numbers:\n- For 4's: 10 (100-199) + "
        "10 (200-299) + 10 (300-399) + 10 (400-488) = 40\n- For 8's: 10 (100-199) + 10 "
        "(200-299) + 10 (300-399) + 9 (400-488) = 39\n\n"
        "Wait, hold on. Let me make sure I didn't make a mistake here. From 100-199, 200-299, "
        "300-399, each contributes 10 for both 4's and 8's in the tens place. So, 10 each x 3 "
        "blocks = 30 for both. Then, in 400-488, 4's contribute 10 and 8's contribute 9. So, "
        "total for tens place:\n- 4's: 30 + 10 = 40\n- 8's: 30 + 9 = 39\n\n"
        "Yes, that seems correct.\n\n"
    ),
    final_answer="90",
    is_correct=True,
    family="deepseek_r1",
)


class SameValue:
    """Equivalence as equal values (math-verify is not needed for plain numbers)."""

    async def equivalent(self, gold: str, pred: str) -> bool:
        return answer_value(gold).strip("$") == answer_value(pred).strip("$")


async def units_of(trace: ReplayTrace) -> list[Unit]:
    checker = SameValue()
    return await trace_units(trace, RuleJudge(checker, by_family=judge_configs()), checker)


def numeric(u: Unit) -> bool:
    return is_value(u.answer)


async def test_units_label_the_intermediate_and_the_answer() -> None:
    units = await units_of(QWQ)
    may, june, total, *rest = units
    assert (may.answer, may.cue, may.strength) == ("500", "last-number", 0)  # "May: $500"
    assert (june.answer, june.label, june.right) == ("$440", False, False)  # June's amount
    assert (total.answer, total.label, total.right) == ("$940", True, True)
    assert total.next_marker == "Wait"
    assert [u.confirms for u in rest] == [True, True]  # "Yeah, that seems right." ...
    assert max(u.end for u in units) < len(_QWQ)  # the closing unit is never judged


async def test_simulation_stops_on_agreement_and_grades_the_stop() -> None:
    units = await units_of(QWQ)
    traces, by_trace = [QWQ], {QWQ.id: units}
    # M = 0 on any number: stops at "May: $500", a given - a lost trace.
    first = simulate(traces, by_trace, numeric, m=0)
    assert (first.lost, first.gained) == (1, 0)
    assert first.saved_chars == len(_QWQ) - units[0].end
    # M = 1: 500, 440 and 940 disagree; the re-check confirms 940 - it stops there, right.
    agreed = simulate(traces, by_trace, numeric, m=1)
    assert (agreed.lost, agreed.gained) == (0, 0)
    assert agreed.saved_chars == len(_QWQ) - units[3].end
    none = simulate(traces, by_trace, lambda u: False, m=0)
    assert none.saved_chars == 0
    assert none.total_chars == len(_QWQ)


async def test_a_repeated_intermediate_value_is_seen_and_costs_the_trace() -> None:
    units = await units_of(R1)
    forty = [u for u in units if not u.confirms]
    assert [(u.answer, u.seen_before, u.label) for u in forty] == [
        ("40", 0, False),
        ("40", 1, False),
    ]
    # Failure mode (2): two agreeing "answers" that are a sub-result - stopping loses the trace.
    outcome = simulate([R1], {R1.id: units}, numeric, m=1)
    assert (outcome.lost, outcome.saved_chars) == (1, len(R1.thinking) - forty[1].end)


@pytest.mark.parametrize(
    ("text", "number"),
    [
        pytest.param("So that's \\[ 500 + 440 = 940 \\]\n\n", "940", id="display-math"),
        pytest.param("First step. Then 1,260 apples, so 12 boxes.", "12", id="last-of-sentence"),
        pytest.param("Total: 5. Let me check.", None, id="not-in-the-last-sentence"),
    ],
)
def test_last_number_is_the_loose_candidate(text: str, number: str | None) -> None:
    found = last_number(text)
    assert (found.answer if found is not None else None) == number


def test_features_and_history_columns() -> None:
    plain = Unit(trace="t", index=0, end=10, confirms=False, rule_positive=False, answer="5")
    repeated = Unit(
        trace="t", index=1, end=10, confirms=False, rule_positive=False, answer="5", seen_before=3
    )
    assert len(plain.features()) == len(repeated.features()) == _WIDTH
    differs = [
        i
        for i, (a, b) in enumerate(zip(plain.features(), repeated.features(), strict=True))
        if a != b
    ]
    assert differs == list(_HISTORY)


def test_fit_without_history_ignores_self_consistency() -> None:
    # The label is exactly "seen before": only the history columns can tell the units apart.
    train = [
        Unit(
            trace="t",
            index=i,
            end=100,
            confirms=False,
            rule_positive=False,
            answer="5",
            seen_before=i % 2,
            label=bool(i % 2),
        )
        for i in range(40)
    ]
    with_history = fit_probabilities(train, train, history=True)
    without = fit_probabilities(train, train, history=False)
    assert with_history[id(train[1])] > 0.9 > 0.1 > with_history[id(train[0])]
    assert without[id(train[1])] == pytest.approx(without[id(train[0])])
