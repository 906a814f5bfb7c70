"""The grader: reasoning stripping, both verdicts, disagreements, threads, real traces."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from verifiers.answers import extract_final_answer
from verifiers.equivalence import verify_pair
from verifiers.grading import Grader, GradeResult, strip_reasoning
from verifiers.normalized_match import canonical_text, parse_number, qwen_style_equal

TRACES = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        pytest.param("<think>x \\boxed{1}</think>\\boxed{2}", "\\boxed{2}", id="think"),
        pytest.param(
            "<|begin_of_thought|>t<|end_of_thought|><|begin_of_solution|>s",
            "<|begin_of_solution|>s",
            id="sky-t1",
        ),
        pytest.param("opened in prompt</think>a", "a", id="open-in-prompt"),
        pytest.param("<think>cut off \\boxed{1}", "", id="unfinished"),
        pytest.param("<|begin_of_thought|>cut off", "", id="unfinished-sky"),
        pytest.param("plain \\boxed{3}", "plain \\boxed{3}", id="untagged"),
    ],
)
def test_strip_reasoning(output: str, expected: str) -> None:
    assert strip_reasoning(output) == expected


# (gold, pred, qwen-style verdict): the lenient rules, including their known false positives.
@pytest.mark.parametrize(
    ("gold", "pred", "expected"),
    [
        pytest.param(r"\frac{1}{2}", "0.5", True, id="frac-decimal"),
        pytest.param("1000000", "1000001", True, id="rel-tol-accepts-wrong-int"),
        pytest.param("1000", "1001", False, id="rel-tol-small-int"),
        pytest.param("50", "0.5", True, id="x100-rule-down"),
        pytest.param("0.5", "50", True, id="x100-rule-up"),
        pytest.param("(1,2]", "[1,2)", True, id="brackets-ignored"),
        pytest.param(r"\pi", "3.14159", True, id="pi-within-tolerance"),
        pytest.param(r"\pi", "3.14", False, id="pi-outside-tolerance"),
        pytest.param(r"\text{(B)}", "b", True, id="choice"),
        pytest.param("B", "C", False, id="choice-differs"),
        pytest.param(r"5\text{ cm}", "5", True, id="unit"),
        pytest.param(r"864 \mbox{ inches}^2", "864", True, id="unit-squared"),
        pytest.param("x=5", "5", True, id="assignment"),
        pytest.param(r"x \in [-2,7]", "[-2, 7]", True, id="membership"),
        pytest.param("-2,1", r"1,\ -2", True, id="unordered-list"),
        pytest.param("1,2", "12", False, id="list-is-not-a-number"),
        pytest.param(
            r"\begin{pmatrix} 1/5 \\ -18/5 \end{pmatrix}",
            r"\begin{pmatrix} \frac{1}{5} \\ -\frac{18}{5} \end{pmatrix}",
            True,
            id="matrix",
        ),
        pytest.param("x^2+2x+1", "(x+1)^2", True, id="symbolic"),
        pytest.param(r"3 \pm 2\sqrt{2}", r"3+2\sqrt{2},3-2\sqrt{2}", False, id="plus-minus-missed"),
        pytest.param("2", "3", False, id="different"),
    ],
)
def test_qwen_style_equal(gold: str, pred: str, expected: bool) -> None:
    assert qwen_style_equal(gold, pred) is expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("-3", -3.0),
        ("2.50", 2.5),
        ("1e3", 1000.0),
        (r"-\frac{1}{4}", -0.25),
        ("3/4", 0.75),
        ("1/0", None),
        ("x", None),
        ("1,2", None),
    ],
)
def test_parse_number(text: str, value: float | None) -> None:
    assert parse_number(text) == value


def test_canonical_text() -> None:
    assert canonical_text(r"X = \dfrac{1}{2}\text{ cm}") == r"\frac{1}{2}"


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(timeout_s=10.0) as g:
        yield g


# id -> (output, gold, verdict, alt_verdict)
GRADE_TABLE: dict[str, tuple[str, str, bool, bool]] = {
    "agree-right": ("<think>hmm</think>So \\boxed{\\frac{1}{2}}.", "0.5", True, True),
    "agree-wrong": ("\\boxed{7}", "8", False, False),
    "large-int": ("\\boxed{1000001}", "1000000", False, True),
    "x100": ("The answer is 0.5", "50", False, True),
    "interval": ("\\boxed{[1,2)}", "(1,2]", False, True),
    "pi": ("\\boxed{3.14159}", "\\pi", False, True),
    "degrees": ("\\boxed{90}", "90^\\circ", True, True),
    "choice": ("Answer: (B)", "\\text{(B)}", True, True),
    "pm": ("\\boxed{3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}}", "3 \\pm 2 \\sqrt{2}", True, False),
}
GRADE_CASES = [pytest.param(*case, id=name) for name, case in GRADE_TABLE.items()]


@pytest.mark.parametrize(("output", "gold", "verdict", "alt_verdict"), GRADE_CASES)
async def test_grade(
    grader: Grader, output: str, gold: str, verdict: bool, alt_verdict: bool
) -> None:
    result = await grader.grade(output, gold)
    assert (result.verdict, result.alt_verdict) == (verdict, alt_verdict)
    assert result.disagreement is (verdict != alt_verdict)
    assert not result.timed_out


async def test_disagreements_are_logged(grader: Grader, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="verifiers.grading"):
        await grader.grade("\\boxed{1000001}", "1000000")
    assert "graders disagree" in caplog.text
    assert "1000001" in caplog.text


@pytest.mark.parametrize(
    "output",
    ["I give up.", "<think>the answer is \\boxed{5} but I keep thinking", ""],
    ids=["no-answer", "unfinished-thinking", "empty"],
)
async def test_no_answer_is_wrong_under_both(grader: Grader, output: str) -> None:
    result = await grader.grade(output, "5")
    assert result == GradeResult(
        gold="5",
        extracted=None,
        verdict=False,
        alt_verdict=False,
        disagreement=False,
        timed_out=False,
    )


def test_grading_from_worker_threads_matches_main_thread(grader: Grader) -> None:
    cases = [(output, gold) for output, gold, _, _ in GRADE_TABLE.values()]
    main = [grader.grade_sync(output, gold) for output, gold in cases]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda c: grader.grade_sync(*c), cases))
    assert threaded == main
    assert [(r.verdict, r.alt_verdict) for r in main] == [
        (verdict, alt) for _, _, verdict, alt in GRADE_TABLE.values()
    ]


async def test_async_and_sync_grades_agree(grader: Grader) -> None:
    items = [(output, gold) for output, gold, _, _ in GRADE_TABLE.values()]
    assert await grader.grade_many(items) == [grader.grade_sync(o, g) for o, g in items]


async def test_timeout_is_reported_and_counted_wrong() -> None:
    with Grader(timeout_s=1.0) as slow:
        result = await slow.grade("\\boxed{10000000!}", "5")
    assert result.extracted == "10000000!"
    assert result.timed_out
    assert not result.verdict


def _trace_rows(name: str) -> list[dict[str, object]]:
    path = TRACES / name
    return [json.loads(line) for line in path.open()]


def test_agreement_with_sky_t1_labels() -> None:
    """First 50 complete MATH-500 Sky-T1 traces labelled correct: 48 graded correct. The two
    misses have no answer after the thinking (see test_answers). In-process `verify_pair`:
    the grader's pipeline without the worker pool."""
    rows = _trace_rows("skythought_sky-t1-math-correct-5k-27b.jsonl")
    rows = [r for r in rows if r["dataset"] == "math500" and r["complete"] and r["is_correct"]]
    verdicts = []
    for row in rows[:50]:
        answer = extract_final_answer(strip_reasoning(str(row["output"])))
        verdicts.append(answer is not None and verify_pair(str(row["ground_truth"]), answer))
    assert sum(verdicts) == 48


@pytest.mark.parametrize(
    "name",
    [
        "thought-anchors_deepseek-r1-distill-llama-8b_math.jsonl",
        "thought-anchors_deepseek-r1-distill-qwen-14b_math.jsonl",
    ],
)
def test_agreement_with_thought_anchors_labels(name: str) -> None:
    """Ten correct and ten incorrect traces per model: the grader reproduces every label."""
    rows = _trace_rows(name)
    for row in rows:
        answer = extract_final_answer(strip_reasoning(str(row["output"])))
        verdict = answer is not None and verify_pair(str(row["ground_truth"]), answer)
        assert verdict is row["is_correct"], row["id"]
