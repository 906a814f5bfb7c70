"""Candidate answers of thoughts: concluding answers vs intermediate quantities.

Sentences are real ones from the development traces (Sky-T1 and R1-distill on MATH problems).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from verifiers.answer_text import answer_value, is_value, names_foreign_unknown, split_sentences
from verifiers.answers import normalize_answer
from verifiers.intermediate import (
    AnswerExtractorConfig,
    AnswerStrength,
    IntermediateAnswerExtractor,
    QuestionTarget,
)
from verifiers.segmentation import SegmenterConfig, segment
from verifiers.trim_replay import load_replay_traces

TRACES = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"

P_CUBIC = (
    "Let $a$ be a positive real number such that all the roots of\n"
    "\\[x^3 + ax^2 + ax + 1 = 0\\]are real.  Find the smallest possible value of $a.$"
)
P_FUNCTIONAL = (
    "The function $f$ satisfies the functional equation\n\\[f(x) + f(y) = f(x + y) - xy - 1\\]"
    "for all real numbers $x$ and $y.$  If $f(1) = 1,$ then find all integers $n$ such that "
    "$f(n) = n.$  Enter all such integers, separated by commas."
)
P_CUBE = (
    "What is the smallest positive perfect cube that can be written as the sum of three "
    "consecutive integers?"
)
P_COUNCIL = (
    "The 7th and 8th grades have enrollments of 520 and 650 respectively. The two grades have a "
    "total of 18 representatives on the Student Council. How many representatives should the 8th "
    "grade have if there is to be a fair representation of the two grades?"
)
P_PIZZA = (
    "Mikka wants to order a pizza with two different toppings. He has 8 different toppings to "
    "choose from. How many different pizzas could he order?"
)
P_GAP = (
    "What is the energy gap (in eV) between the n=3 and n=8 states? Give your answer to one "
    "decimal place."
)
P_RONNIE = (
    "Ronnie was given $5 while Rissa was given thrice as much. After each of them had given an "
    "equal amount of money to their little sister, Rissa is left with 4/5 of her money. How much "
    "is left in Ronnie's money?"
)
P_BITS = (
    "When the base-16 number $66666_{16}$ is written in base 2, how many base-2 digits (bits) "
    "does it have?"
)
P_PORTER = (
    "William Sydney Porter tried to perform the calculation $\\frac{-3+4i}{1+2i}$. However, he "
    "accidentally missed the minus sign, finding $\\frac{3+4i}{1+2i}=\\frac{11}{5}-\\frac{2}{5}i$."
    " What answer should he have obtained?"
)
P_SQRT = "Simplify $\\sqrt{242}$."
P_CUBIC_FIT = (
    "A cubic polynomial $p(x)$ satisfies\n\\[p(n) = \\frac{1}{n^2}\\]for $n = 1, 2, 3,$ and "
    "$4.$  Find $p(5).$"
)
P_HEXAGON = (
    "A regular hexagon can be divided into six equilateral triangles. If the perimeter of one of "
    "the triangles is 21 inches, what is the perimeter, in inches, of the regular hexagon?"
)
P_PRODUCT = (
    "Find the product $CD$ of the integers $C$ and $D$ for which\n"
    "\\[\\frac{C}{x-3}+\\frac{D}{x+8}=\\frac{4x-23}{x^2+5x-24}\\]for all real values of $x$ "
    "except $-8$ and $3$."
)
P_MEDIAN = "What is the median of the first ten positive integers?"
P_SERIES = "Find $n$ if the sum of the first $n$ terms is $\\frac{255}{512}$."
P_COUNT = "For how many values of $x$ is the expression $\\frac{x-5}{x^2-9}$ not defined?"

E, T, S, B = (
    AnswerStrength.EXPRESSION,
    AnswerStrength.TARGET,
    AnswerStrength.STATED,
    AnswerStrength.BOXED,
)


@pytest.mark.parametrize(
    ("problem", "sentence", "answer", "strength"),
    [
        # Concluding answers.
        pytest.param(P_CUBIC, r"So, the answer is \( a = 3 \).", "3", S, id="stated"),
        pytest.param(
            P_CUBIC,
            r"Therefore, the smallest positive real number \( a \) such that all roots are real "
            r"is \( a = 3 \).",
            "3",
            T,
            id="target-symbol-in-subject",
        ),
        pytest.param(
            P_FUNCTIONAL,
            r"Therefore, the integers \(n\) such that \(f(n) = n\) are \(n = 1\) and \(n = -2\).",
            "1, -2",
            T,
            id="target-list",
        ),
        pytest.param(
            P_CUBE,
            "So, 27 is the smallest perfect cube that is a multiple of 3.",
            "27",
            T,
            id="value-first-target-noun",
        ),
        pytest.param(P_BITS, "Therefore, the number of bits is 19.", "19", T, id="noun-synonym"),
        pytest.param(
            P_PORTER,
            r"So, the correct answer should be \(1 + 2i\), as I calculated earlier.",
            "1 + 2i",
            S,
            id="correct-answer-should-be",
        ),
        pytest.param(
            P_PORTER,
            r"According to my calculations, the correct answer is \(1 + 2i\), but perhaps I need "
            r"to check if there's another way to approach this.",
            "1 + 2i",
            S,
            id="doubt-about-further-work-only",
        ),
        pytest.param(
            P_SQRT,
            r"So, putting it all together, \(\sqrt{242} = 11\sqrt{2}\).",
            r"11\sqrt{2}",
            T,
            id="asked-expression-equation",
        ),
        pytest.param(P_CUBIC_FIT, "Thus, p(5) = -120/288 = -5/12.", "-5/12", T, id="plain-eq"),
        pytest.param(
            P_HEXAGON,
            "Therefore, the perimeter of the hexagon is 6 times 7 inches, which is 42 inches.",
            "42",
            T,
            id="which-is-restatement",
        ),
        pytest.param(
            P_PRODUCT, r"Therefore, the product \( CD = (1)(-5) = -5 \).", "-5", T, id="compound"
        ),
        pytest.param(
            P_SQRT,
            r"Thus, the simplified form of \(\sqrt{242}\) is \(\boxed{11\sqrt{2}}\).",
            r"11\sqrt{2}",
            B,
            id="boxed",
        ),
        pytest.param(
            "", r"Therefore, the final answer is: \[ \boxed{5} \]", "5", B, id="boxed-display"
        ),
        pytest.param("", "So, I think the answer is two y-intercepts.", "2", S, id="number-word"),
        pytest.param(
            "", r"I feel confident with my answer of \( c = 33 \).", "33", S, id="answer-of"
        ),
        # Intermediate quantities: found, but graded below TARGET.
        pytest.param(P_FUNCTIONAL, r"Interesting, so \(f(2) = 4\).", "4", E, id="sub-result"),
        pytest.param(
            P_CUBIC,
            r"So, the critical point is at \( x = -1 \), and it's a double root.",
            "-1",
            E,
            id="other-variable",
        ),
        pytest.param(
            P_BITS, "So, 66666₁₆ would be 20 bits in binary.", "20", E, id="subject-not-asked"
        ),
        # A conclusion through a verb other than "is" (real: R1, GSM8K 286): the asked person and
        # the asked noun make it TARGET; another person's amount is a step.
        # Unit words between the value and "is the correct answer" (real: R1, GSM8K comforter).
        pytest.param(
            "", "So, yeah, I think 68 square feet is the correct answer.", "68", S, id="unit-answer"
        ),
        # A rounded value is the reported one (real: Sky-T1, minerva_math 1.3 eV).
        pytest.param(
            P_GAP,
            "Rounding to one decimal place, the energy gap is approximately 1.3 eV.",
            "1.3",
            T,
            id="rounded-approximately",
        ),
        pytest.param(P_RONNIE, "So, Ronnie has $2 left.", "$2", T, id="verb-value"),
        pytest.param(P_RONNIE, "So Rissa has $12 left.", "$12", E, id="verb-value-someone-else"),
        pytest.param(
            P_HEXAGON,
            "So, for six triangles, there are 6 times 2 = 12 internal sides.",
            "12",
            E,
            id="there-are-other-noun",
        ),
        pytest.param(
            P_PRODUCT, r"So, \( C = -1 \) and \( D = 5 \).", "5", E, id="part-of-compound"
        ),
        pytest.param(
            "", "Therefore, the only integer roots are x = 1 and x = -2.", "1, -2", E, id="list"
        ),
        pytest.param("", "So, the number of ways is (9-1)! = 8!.", "8!", E, id="factorial"),
        # An adverb between the verb and the value (real: Sky-T1, math500/354).
        pytest.param(P_MEDIAN, "So, the median is indeed 81.", "81", T, id="is-indeed"),
        pytest.param("", "Thus, the sum is still 12.", "12", E, id="is-still"),
        # A value the sentence declares right (real: Sky-T1, math500/446).
        pytest.param(P_SERIES, "So, n = 8 is correct.", "8", T, id="declared-right"),
        pytest.param("", "So, n = 8 is correct.", "8", E, id="declared-right-untargeted"),
        pytest.param(
            "", "So, the total number of ways should be 5 × 4 × 3.", "5 × 4 × 3", E, id="times"
        ),
        pytest.param(
            "", "Therefore, the polar coordinates are (3, π/2).", "(3, π/2)", E, id="tuple"
        ),
    ],
)
def test_grades(problem: str, sentence: str, answer: str, strength: AnswerStrength) -> None:
    found = IntermediateAnswerExtractor().grade(
        sentence, target=QuestionTarget.from_problem(problem)
    )
    assert found is not None
    assert (found.answer, found.strength) == (answer, strength)


@pytest.mark.parametrize(
    ("problem", "sentence"),
    [
        pytest.param(
            P_PORTER, r"Maybe I need to accept that the correct answer is \(1 + 2i\).", id="hedged"
        ),
        pytest.param(P_CUBIC, "So the answer is 3, but that can't be right.", id="retracted"),
        pytest.param(P_CUBIC, "Is the answer 3?", id="question"),
        pytest.param(
            P_CUBIC,
            r"Wait a minute, but earlier I had \(r = 3.5\) as a solution, but it makes the "
            r"denominator zero, so it's invalid.",
            id="rejected-value",
        ),
        pytest.param(
            P_CUBIC,
            r"This is a quadratic equation in \( x \), and its discriminant is "
            r"\( (2a)^2 - 4 \cdot 3 \cdot a = 4a^2 - 12a = 4a(a - 3) \).",
            id="no-conclusion-cue",
        ),
        pytest.param(
            P_COUNT,
            r"Therefore, the expression is undefined at two values of \(x\): \(x = 3\) and "
            r"\(x = -3\).",
            id="negated-property",
        ),
        # Parts checked against the given total (real: R1, MATH-500 48, whose answer is 10).
        pytest.param(
            P_COUNCIL, "So, that adds up to 18 representatives in total.", id="verb-value-adds-up"
        ),
        pytest.param(
            P_PIZZA,
            "Therefore, Mikka can order 28 different pizzas with two different toppings from the "
            "8 available.",
            id="verb-value-two-numbers",
        ),
        # Unrounded (real: Sky-T1, minerva_math 2, which reports 41.8 after "approximately 41.81").
        pytest.param(P_GAP, "So, the energy gap is approximately 1.2985 eV.", id="approximately"),
        pytest.param("", "Let me compute 6 times 7 first.", id="plan"),
        # The last number is an operand (real: R1, MATH-500 10, whose answer is 35 x 6 = 210).
        pytest.param(
            "", "So, 35 ways for the boys times 6 ways for the girls.", id="verb-value-operand"
        ),
        # Cut mid-expression (real: Sky-T1, math500/143, "... = (1/2) * |...|").
        pytest.param("", "Thus, the area is (1/2) *", id="dangling-operator"),
        pytest.param("", r"So, the area is \(\frac{1}{2} \cdot\)", id="dangling-latex-operator"),
    ],
)
def test_no_candidate(problem: str, sentence: str) -> None:
    target = QuestionTarget.from_problem(problem)
    assert IntermediateAnswerExtractor().grade(sentence, target=target) is None


@pytest.mark.parametrize(
    ("problem", "symbols", "nouns"),
    [
        pytest.param(P_CUBIC, ("a",), ("smallest",), id="value-of-symbol"),
        pytest.param(P_FUNCTIONAL, ("n",), (), id="condition-dropped"),
        pytest.param(P_CUBE, (), ("cube",), id="head-noun"),
        pytest.param(P_BITS, (), ("digit", "bit"), id="parenthesised-synonym"),
        pytest.param(P_SQRT, ("\\sqrt{242}",), ("simplified", "expression"), id="simplify"),
        pytest.param(P_CUBIC_FIT, ("p(5)",), ("expression",), id="find-expression"),
        pytest.param(P_PRODUCT, ("CD", "x"), ("product",), id="compound-symbol"),
        pytest.param(P_COUNT, (), (), id="how-many-is-a-count"),
        pytest.param(
            "Find the number of $x$-intercepts of the graph.",
            ("x",),
            ("intercept",),
            id="generic-head-through-of",
        ),
    ],
)
def test_question_target(problem: str, symbols: tuple[str, ...], nouns: tuple[str, ...]) -> None:
    target = QuestionTarget.from_problem(problem)
    assert (target.symbols, target.nouns) == (symbols, nouns)


def test_split_sentences_keeps_display_math_and_lead_ins_together() -> None:
    text = (
        "First, multiply. So, the numerator becomes:\n\n\\[\n-3 + 6i\n\\]\n\n"
        "Therefore, the final answer is:\n\n\\[ \\boxed{5} \\]"
    )
    assert split_sentences(text) == [
        "First, multiply.",
        "So, the numerator becomes: \\[ -3 + 6i \\]",
        "Therefore, the final answer is: \\[ \\boxed{5} \\]",
    ]


def test_extract_prefers_the_strongest_then_the_latest() -> None:
    thought = "So, the answer is 5.\n\nThen 2 + 3 = 5 again, so x = 5.\n\nNice."
    found = IntermediateAnswerExtractor().extract(thought)
    assert found is not None
    assert (found.answer, found.strength) == ("5", S)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        # Real (Sky-T1, math500/454 and math500/354): the pointer states the previous result.
        pytest.param(
            "So, the equation is y = 2x + 3.\nI think that's the answer.", "2x + 3", id="real"
        ),
        pytest.param(
            "Yes, that matches what I found earlier.\nSo, the median is indeed 81.\n"
            "I think that's the answer.",
            "81",
            id="real-after-adverb",
        ),
        pytest.param("The total is 6 + 7 = 13.\nThat should be the answer.", "13", id="no-cue"),
        pytest.param("Maybe the total is 13.\nI think that's the answer.", None, id="hedged"),
        pytest.param("Let me add them up.\nI think that's the answer.", None, id="no-value"),
    ],
)
def test_pointer_sentence_states_the_previous_result(text: str, answer: str | None) -> None:
    found = IntermediateAnswerExtractor().extract(text)
    if answer is None:
        assert found is None
        return
    assert found is not None
    assert (found.answer, found.strength) == (answer, S)
    assert found.cue.startswith("pointer+")


def test_window_limits_how_far_back_the_answer_may_be() -> None:
    thought = "So, the answer is 5. Let me check once. I add. I subtract. I compare."
    assert IntermediateAnswerExtractor().extract(thought) is None
    wide = IntermediateAnswerExtractor(AnswerExtractorConfig(window_sentences=5))
    assert wide.extract(thought) is not None


@pytest.mark.parametrize(
    ("text", "confirms"),
    [
        pytest.param("Plugging in: 5 = 1 + 4.\n\nYes, that checks out.", True, id="checks-out"),
        pytest.param("Hmm, that seems correct.", True, id="seems-correct"),
        pytest.param("So, that confirms it.", True, id="confirms"),
        pytest.param("That doesn't match.", False, id="negated"),
        pytest.param("Yes, that's correct, but let me try another way.", False, id="but"),
        pytest.param("Is that correct?", False, id="question"),
        pytest.param("Let me try another approach.", False, id="nothing"),
    ],
)
def test_confirmation(text: str, confirms: bool) -> None:
    assert IntermediateAnswerExtractor().confirms(text) is confirms


def test_grades_separate_conclusions_from_intermediates_on_real_traces() -> None:
    """On the development traces, TARGET-or-better candidates are mostly the trace's final
    answer and weaker ones mostly are not: the grade carries the signal the rules need."""
    traces = load_replay_traces(
        [
            TRACES / "skythought_sky-t1-math-correct-5k-27b.jsonl",
            TRACES / "thought-anchors_deepseek-r1-distill-qwen-14b_math.jsonl",
        ],
        datasets=["math500", "math_hendrycks"],
    )[::3]

    def norm(answer: str) -> str:
        return re.sub(r"\s+", "", normalize_answer(answer))

    extractor = IntermediateAnswerExtractor()
    agree = {True: [0, 0], False: [0, 0]}  # strong? -> [matches final, total]
    for trace in traces:
        target = QuestionTarget.from_problem(trace.problem)
        for thought in segment(trace.thinking, SegmenterConfig(family=trace.family)):
            found = extractor.extract(thought.text, target=target)
            if found is None:
                continue
            bucket = agree[found.strength >= AnswerStrength.TARGET]
            bucket[0] += norm(found.answer) == norm(trace.final_answer or "")
            bucket[1] += 1
    strong, weak = (agree[k][0] / agree[k][1] for k in (True, False))
    assert agree[True][1] > 100
    assert agree[False][1] > 100
    assert strong > 0.6
    assert strong > 2 * weak


@pytest.mark.parametrize(
    ("sentence", "answer"),
    [
        # QwQ, GSM8K: the value is a premise of what follows, not the answer (which is 4).
        ("But then the answer would be 5, because missing 5 would make it over.", None),
        # QwQ, GSM8K 25: "answer:" heads a list of the problem's quantities (the answer is 24).
        ("Therefore, sticking with the original answer: 4 teachers, 2 lessons each, so 8.", None),
        # QwQ, GSM8K 54: an answer under a condition is a hypothesis (the answer is 6).
        ("But if the question asks for distinct books, then the answer would be three.", None),
        # QwQ, MATH-500 36: "one" is a word here, not the number 1.
        ("Since the answer is one of A-E, one of them is always the largest.", None),
        ("So, the answer is 36.36 seconds, which is approximately 36 and 4/11.", "36.36"),
        ("The answer is 20000 over pi.", "20000 over pi"),
        ("Therefore, the unordered set is {-2, 1 + sqrt(5), 1 - sqrt(5)}.", None),
        # QwQ, GSM8K 205: the pointer takes the previous sentence's last result, not its first.
        ("Which is 30*6=180 per day, 180*7=1,260. So that's the answer.", "1,260"),
    ],
)
def test_stated_answers_that_are_not_the_answer(sentence: str, answer: str | None) -> None:
    found = IntermediateAnswerExtractor().extract(sentence)
    stated = found is not None and found.strength >= AnswerStrength.STATED
    assert (found.answer if stated and found else None) == answer


def test_a_set_is_read_whole() -> None:
    sentence = "Therefore, the unordered set is {-2, 1 + sqrt(5), 1 - sqrt(5)}."
    found = IntermediateAnswerExtractor().extract(sentence)
    assert found is not None
    assert found.answer == "{-2, 1 + sqrt(5), 1 - sqrt(5)}"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("5 times", "5"),
        ("$36", "36"),
        ("\\$9,360", "9,360"),
        ("6√2", "6\\sqrt{2}"),
        ("20000 over pi", "20000/\\pi"),
        ("-5/12 cm", "-5/12"),
        ("2x + 1", "2x + 1"),
        ("x = 3", "x = 3"),
    ],
)
def test_answer_value(raw: str, value: str) -> None:
    assert answer_value(raw) == value


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("400/11", True),
        ("6\\sqrt{2}", True),
        ("3\\pi", True),
        ("$25,000", True),
        ("D^2", False),
        ("10E + 5B + 30T - 25", False),
        ("x", False),
        ("\\pi", False),
    ],
)
def test_is_value(answer: str, expected: bool) -> None:
    assert is_value(answer) is expected


def test_a_complex_number_is_a_value() -> None:
    # R1, MATH-500 1: "6 - 5i" is the result; the imaginary unit is no unknown.
    assert is_value("6 - 5i")
    assert not is_value("5x - i")


@pytest.mark.parametrize(
    ("answer", "problem", "foreign"),
    [
        # QwQ, GSM8K 139: "the final value is [(N + (N/2))/5] * (N - 12)" - N is the model's own
        # name for "the number"; the answer is 48.
        ("[(N + (N/2))/5] * (N - 12)", "Then the number train has a starting value of 20.", True),
        ("2x + 1", "Find $f(x)$ in terms of $x$.", False),
        ("6 - 5i", "Compute $(1 + 2i)(a - i)$.", False),
        ("48", "How many hours did she sleep?", False),
    ],
)
def test_an_answer_in_the_models_own_unknowns(answer: str, problem: str, foreign: bool) -> None:
    assert names_foreign_unknown(answer, problem) is foreign


RATE = "What is the minimal compound interest rate that the savings account must provide?"


@pytest.mark.parametrize(
    ("sentence", "answer", "strength"),
    [
        # R1, MATH-500 3 (answer 10): the last verb's subject is its own clause, "the future
        # value", not the asked rate named in the first clause.
        (
            "Therefore, 10% is indeed the minimal rate required because at 10%, the future value "
            "is exactly 66,200, and any lower rate would result in less than that.",
            "66,200",
            AnswerStrength.EXPRESSION,
        ),
        ("So, the minimal rate is 10%.", "10%", AnswerStrength.TARGET),
        # A percentage declared right is the thought's own value, not a bare confirmation.
        ("So, 10% is correct.", "10%", AnswerStrength.EXPRESSION),
    ],
)
def test_the_subject_is_the_last_clause(
    sentence: str, answer: str, strength: AnswerStrength
) -> None:
    found = IntermediateAnswerExtractor().extract(
        sentence, target=QuestionTarget.from_problem(RATE)
    )
    assert found is not None
    assert (found.answer, found.strength) == (answer, strength)


def test_question_target_names_the_asked_person() -> None:
    assert QuestionTarget.from_problem(P_RONNIE).names == ("Ronnie",)
    assert QuestionTarget.from_problem(P_BITS).names == ()
