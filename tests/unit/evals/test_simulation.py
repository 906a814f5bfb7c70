import json
from pathlib import Path

import pytest

from evals.simulation import (
    Aggregation,
    EarlyStop,
    SimulationModel,
    SimulationPoint,
    ThinkingMode,
    load_traces,
    simulate,
)

TRACES = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"
SKY_T1 = TRACES / "skythought_sky-t1-math-correct-5k-27b.jsonl"

# One character per token keeps the arithmetic readable; 100 tokens/s, 1 s prefill.
MODEL = SimulationModel(
    chars_per_token=1.0,
    decode_tokens_per_s={"default": 100.0, "fast": 200.0},
    prefill_s=1.0,
    forced_answer_tokens=10,
    fast_thinking_budget=50,
)


def _trace(pid: str, *, lead: int, tail: int, answer: str, correct: bool, **kw) -> dict:
    """Thinking = `lead` chars, ` = <answer>`, then `tail` chars; then a 20-char answer part."""
    thinking = "<think>" + "x" * (lead - 7) + " = " + answer + "." + "y" * (tail - 1)
    return {
        "id": f"{pid}:{kw.pop('suffix', 'a')}",
        "dataset": "toy",
        "model": "toy-model",
        "problem": "?",
        "ground_truth": "42",
        "output": thinking + "</think>" + "z" * 12,
        "final_answer": answer,
        "is_correct": correct,
        "thinking_delimiters": ["<think>", "</think>"],
        "has_thinking_end": True,
        "complete": True,
        "level": "Level 3",
        "subject": "Algebra",
        **kw,
    }


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def single(tmp_path: Path) -> dict:
    # thinking 100 + 3 + 2 + 895 = 1000 chars, the answer at offset 103; answer part 20 chars.
    return load_traces(
        [_write(tmp_path, [_trace("q", lead=100, tail=895, answer="42", correct=True)])],
        model=MODEL,
    )


def test_trace_is_measured_in_tokens(single: dict) -> None:
    (trace,) = single["q"]
    assert (trace.thinking_tokens, trace.answer_tokens, trace.first_answer_token) == (1000, 20, 103)
    assert (trace.level, trace.subject, trace.model) == (3, "Algebra", "toy-model")


@pytest.mark.parametrize(
    ("point", "correct", "tokens"),
    [
        (SimulationPoint(), True, 1020),
        (SimulationPoint(trim=True), True, 103 + 20),  # cut where the answer first appears
        (SimulationPoint(thinking_budget=500), True, 500 + 10),  # answer seen before the cut
        (SimulationPoint(thinking_budget=50), False, 50 + 10),  # cut before the answer
        (SimulationPoint(mode=ThinkingMode.FAST), False, 50 + 10),  # fast = budget of 50
        (SimulationPoint(trim=True, thinking_budget=500), True, 103 + 20),
    ],
    ids=["plain", "trim", "budget-after-answer", "budget-before-answer", "fast", "trim+budget"],
)
def test_single_branch(single: dict, point: SimulationPoint, correct: bool, tokens: int) -> None:
    (record,) = simulate(single, point, model=MODEL)
    assert record.correct is correct
    assert record.answer == ("42" if correct else None)
    assert record.thinking_tokens + record.answer_tokens == tokens
    assert record.latency_s == pytest.approx(1.0 + tokens / 100.0)
    assert record.tts is not None and record.tts["simulated"] is True


def test_pool_rate_and_branch_slowdown(single: dict) -> None:
    slow = MODEL.model_copy(update={"branch_slowdown": 0.5})
    (record,) = simulate(single, SimulationPoint(n_branches=3, pool="fast"), model=slow)
    assert record.latency_s == pytest.approx(1.0 + 1020 / (200.0 / 2.0))
    assert record.thinking_tokens + record.answer_tokens == 3 * 1020


def test_unknown_pool_lists_simulated_pools(single: dict) -> None:
    with pytest.raises(ValueError, match="default, fast"):
        simulate(single, SimulationPoint(pool="gpu"), model=MODEL)


@pytest.fixture
def split(tmp_path: Path) -> dict:
    """A short right trace (220 tokens total) and a long wrong one (620)."""
    rows = [
        _trace("q", lead=100, tail=95, answer="42", correct=True, suffix="right"),
        _trace("q", lead=100, tail=495, answer="41", correct=False, suffix="wrong"),
    ]
    return load_traces([_write(tmp_path, rows)], model=MODEL)


@pytest.mark.parametrize(
    ("aggregation", "correct", "latency_tokens", "spent"),
    [
        (Aggregation.MAJORITY, True, 620, 220 + 620),  # 1-1 tie: the first finished wins
        (Aggregation.FIRST_FINISH, True, 220, 2 * 220),  # the long branch is cancelled
    ],
    ids=str,
)
def test_two_branches(
    split: dict, aggregation: Aggregation, correct: bool, latency_tokens: int, spent: int
) -> None:
    (record,) = simulate(split, SimulationPoint(n_branches=2, aggregation=aggregation), model=MODEL)
    assert record.correct is correct
    assert record.latency_s == pytest.approx(1.0 + latency_tokens / 100.0)
    assert record.thinking_tokens + record.answer_tokens == spent


@pytest.fixture
def agreeing(tmp_path: Path) -> dict:
    """Four right traces of 120, 220, 320 and 420 tokens."""
    rows = [
        _trace("q", lead=94, tail=tail, answer="42", correct=True, suffix=str(tail))
        for tail in (1, 101, 201, 301)
    ]
    return load_traces([_write(tmp_path, rows)], model=MODEL)


@pytest.mark.parametrize(
    ("early_stop", "extra", "stop_tokens"),
    [
        (EarlyStop.NONE, {}, 420),
        (EarlyStop.UNANIMOUS_WINDOW, {"early_stop_window": 2}, 220),
        (EarlyStop.UNANIMOUS_WINDOW, {"early_stop_window": 9}, 420),  # window capped at N
        (EarlyStop.BETA, {"early_stop_threshold": 0.7}, 120),  # P(Bin(2,.5) <= 1) = .75
        (EarlyStop.BETA, {"early_stop_threshold": 0.8}, 220),  # P(Bin(3,.5) <= 2) = .875
        (EarlyStop.BETA, {"early_stop_threshold": 0.95}, 420),  # needs 4 votes: 31/32
    ],
    ids=["none", "window2", "window-capped", "beta.7", "beta.8", "beta.95"],
)
def test_early_stop(agreeing: dict, early_stop: EarlyStop, extra: dict, stop_tokens: int) -> None:
    point = SimulationPoint(n_branches=4, early_stop=early_stop, **extra)
    (record,) = simulate(agreeing, point, model=MODEL)
    assert record.correct
    assert record.latency_s == pytest.approx(1.0 + stop_tokens / 100.0)
    spent = sum(min(t, stop_tokens) for t in (120, 220, 320, 420))
    assert record.thinking_tokens + record.answer_tokens == spent


def test_weighted_aggregation_is_not_simulated() -> None:
    with pytest.raises(ValueError, match="first_finish"):
        SimulationPoint(aggregation="weighted")


def test_single_branch_replay_reproduces_recorded_accuracy() -> None:
    rows = [json.loads(line) for line in SKY_T1.open()]
    rows = [r for r in rows if r["dataset"] == "math500"]
    traces = load_traces([SKY_T1], datasets=["math500"])
    records = simulate(traces, SimulationPoint(), model=SimulationModel())
    assert len(records) == len(rows) == 500
    expected = sum(bool(r["is_correct"] and r["final_answer"]) for r in rows)
    assert sum(r.correct for r in records) == expected
    strict = SimulationModel(cut_off_counts_as_wrong=True)
    strict_records = simulate(
        load_traces([SKY_T1], datasets=["math500"], model=strict), SimulationPoint(), model=strict
    )
    assert sum(r.correct for r in strict_records) == sum(
        bool(r["is_correct"] and r["final_answer"] and r["complete"]) for r in rows
    )
