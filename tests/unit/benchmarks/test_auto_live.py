"""The live-vs-offline check of benchmarks.auto_live: its tolerances and its grading by record."""

from __future__ import annotations

import pytest

from benchmarks.auto_live import LiveAnswer, LiveArm, live_arm, reproduced_level, reproduction
from evals.pairs import LadderProblem, RecordedAnswer
from evals.routing import Arm


def arm(accuracy: float, tokens: float) -> Arm:
    return Arm(accuracy=accuracy, mean_tokens=tokens, tokens_vs_slow=0.0)


def live(accuracy: float, tokens: float) -> LiveArm:
    return LiveArm(accuracy=accuracy, mean_tokens=tokens, mean_latency_s=1.0, unmatched=0)


@pytest.mark.parametrize(
    ("live_acc", "live_tokens", "holds"),
    [
        (0.95, 1000.0, True),
        (0.97, 1050.0, True),
        (0.93, 950.0, True),
        (0.929, 1000.0, False),
        (0.95, 1051.0, False),
        (0.95, 949.0, False),
    ],
    ids=[
        "equal",
        "at-both-upper-edges",
        "at-both-lower-edges",
        "2.1-pt-off",
        "5.1%-more",
        "5.1%-fewer",
    ],
)
def test_reproduction_tolerates_2_pt_and_5_percent(
    live_acc: float, live_tokens: float, holds: bool
) -> None:
    check = reproduction(live(live_acc, live_tokens), arm(0.95, 1000.0))
    assert check.holds is holds
    assert check.tokens_gap == pytest.approx(live_tokens / 1000.0 - 1)


def problem() -> LadderProblem:
    def answer(model: str, text: str, correct: bool) -> RecordedAnswer:
        return RecordedAnswer(
            model=model, text=text, thinking_chars=0, tokens=10, answer=None, correct=correct
        )

    return LadderProblem(
        problem_id="p",
        problem="q",
        answers=(answer("fast", "It is \\boxed{3}.", False), answer("slow", "\\boxed{4}", True)),
    )


@pytest.mark.parametrize(
    ("content", "level"),
    [("It is \\boxed{3}.\n", 0), ("\n\\boxed{4}", 1), ("\\boxed{4} or so", None), ("", None)],
    ids=["fast-record", "slow-record", "neither", "empty"],
)
def test_a_live_answer_is_matched_to_the_recording_it_reproduces(
    content: str, level: int | None
) -> None:
    assert reproduced_level(problem(), content) == level


def test_unmatched_answers_count_wrong() -> None:
    answers = [
        LiveAnswer(
            problem_id="p", mode="fast", stage="probe", tokens=t, latency_s=1.0, level=lv, correct=c
        )
        for t, lv, c in ((10, 1, True), (30, None, False))
    ]
    summary = live_arm(answers)
    assert (summary.accuracy, summary.mean_tokens, summary.unmatched) == (0.5, 20.0, 1)
