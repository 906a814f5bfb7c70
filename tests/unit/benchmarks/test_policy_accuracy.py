"""The pure parts of the policy-accuracy benchmark: problems, plans, the table, the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.policy_accuracy import (
    Outcome,
    PlanChoice,
    PolicyAccuracyResult,
    Verdict,
    config_table,
    p95,
    plan_choice,
    plan_summary,
    report,
    select_problems,
    tts_block,
    unplanned,
    verdict,
)
from policies.profile import PoolProfile, StepTimePoint
from tts_orchestrator.planning.profiler import (
    ConcurrencySample,
    CounterDelta,
    PrefillSample,
    ProfileRun,
    StreamTiming,
)

BUDGET = 20.0
PLAN = PlanChoice(pool="draft", n_branches=2, thinking_budget=None, met_constraints=True)


def _outcome(config: str, problem: str, correct: bool, **kw: Any) -> Outcome:
    defaults: dict[str, Any] = {
        "latency_s": 10.0,
        "completion_tokens": 200,
        "pool": "plain",
        "n_branches": int(config.removeprefix("fixed-")) if config != "policy" else 2,
        "plan": PLAN if config == "policy" else None,
    }
    return Outcome(config, problem, 1, correct, **{**defaults, **kw})


def _run(marks: dict[str, str]) -> list[Outcome]:
    """One outcome per config and problem; ``marks[config]`` is a string of 1 (right) / 0."""
    return [
        _outcome(config, f"p{i}", mark == "1")
        for config, row in marks.items()
        for i, mark in enumerate(row)
    ]


def test_selection_is_deterministic_level_balanced_and_prefix_stable() -> None:
    problems = select_problems(30)
    assert [p.id for p in problems] == [p.id for p in select_problems(30)]
    assert len({p.id for p in problems}) == 30
    assert [p.level for p in problems[:6]] == [1, 2, 3, 1, 2, 3]
    assert {p.level for p in problems} == {1, 2, 3}
    assert [p.id for p in select_problems(7)] == [p.id for p in problems[:7]]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param("fixed-1", {"n_branches": 1, "latency_budget_s": 20.0}, id="fixed-1"),
        pytest.param("fixed-4", {"n_branches": 4, "latency_budget_s": 20.0}, id="fixed-4"),
        pytest.param("policy", {"latency_budget_s": 20.0}, id="policy-gives-no-n"),
    ],
)
def test_tts_block(config: str, expected: dict[str, Any]) -> None:
    assert tts_block(config, BUDGET) == expected


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param(
            {
                "id": "chatcmpl-1",
                "pool": "draft",
                "plan": {
                    "pool": "draft",
                    "n_branches": 2,
                    "thinking_budget": None,
                    "predicted_latency_s": 17.5,
                    "met_constraints": True,
                    "candidates": [],
                    "profiles": {"draft": {"step_time_s_at_1": 0.25}, "plain": {}},
                },
            },
            PlanChoice("draft", 2, None, True, 17.5, 0.25),
            id="planned",
        ),
        pytest.param(
            {"plan": {"pool": "plain", "n_branches": 1, "thinking_budget": 512}},
            PlanChoice("plain", 1, 512, True, None),
            id="older-record-without-optional-fields",
        ),
        pytest.param(
            {"plan": {"pool": "plain", "n_branches": 1, "met_constraints": False}},
            PlanChoice("plain", 1, None, False, None),
            id="nothing-fit",
        ),
        pytest.param({"id": "chatcmpl-2", "plan": None}, None, id="not-planned"),
        pytest.param({"id": "chatcmpl-3"}, None, id="no-plan-field"),
    ],
)
def test_plan_choice(record: dict[str, Any], expected: PlanChoice | None) -> None:
    assert plan_choice(record) == expected


@pytest.mark.parametrize(
    ("xs", "expected"),
    [
        pytest.param([5.0], 5.0, id="one"),
        pytest.param([float(i) for i in range(1, 21)], 19.0, id="twenty"),
        pytest.param([float(i) for i in range(1, 101)], 95.0, id="hundred"),
    ],
)
def test_p95_is_nearest_rank(xs: list[float], expected: float) -> None:
    assert p95(xs) == expected


@pytest.mark.parametrize(
    ("marks", "expected"),
    [
        pytest.param(
            {"fixed-1": "1100", "fixed-4": "1000", "policy": "1100"}, Verdict.TIE, id="tie"
        ),
        pytest.param(
            {"fixed-1": "1000", "fixed-4": "1100", "policy": "1110"}, Verdict.PASS, id="above"
        ),
        pytest.param(
            {"fixed-1": "1100", "fixed-4": "0000", "policy": "1000"}, Verdict.FAIL, id="below-1"
        ),
        pytest.param(
            {"fixed-1": "0000", "fixed-4": "0110", "policy": "1100"}, Verdict.TIE, id="eq-4"
        ),
        pytest.param(
            {"fixed-1": "10", "fixed-4": "10", "policy": "1"}, Verdict.INCOMPLETE, id="incomplete"
        ),
    ],
)
def test_verdict_compares_with_the_best_fixed_config(
    marks: dict[str, str], expected: Verdict
) -> None:
    result, text = verdict(_run(marks))
    assert result is expected
    assert f"**Verdict: {expected.value}**" in text
    assert ("PASS" in text.split("(")[0]) is (expected is Verdict.PASS)


def test_the_recorded_16_of_30_tie_is_a_tie_and_says_the_policy_was_slower() -> None:
    """The 2026-11-22 run: policy 16/30, fixed-1 16/30, fixed-4 10/30 (printed PASS then)."""
    marks = {"fixed-1": "1" * 16 + "0" * 14, "fixed-4": "1" * 10 + "0" * 20}
    marks["policy"] = "1" * 14 + "0011" + "0" * 12  # 2 won, 2 lost vs fixed-1
    outcomes = _run(marks)
    for o in outcomes:
        o.latency_s = {"fixed-1": 23.5, "fixed-4": 41.8, "policy": 30.4}[o.config]
    result, text = verdict(outcomes)
    assert result is Verdict.TIE
    assert "policy 16/30 vs fixed-1 16/30, fixed-4 10/30" in text
    assert "vs fixed-1: 2 won, 2 lost" in text
    assert "mean latency policy 30.4 s, fixed-1 23.5 s" in text


def test_verdict_reports_paired_wins_and_losses() -> None:
    _, text = verdict(_run({"fixed-1": "1100", "fixed-4": "0000", "policy": "1010"}))
    assert "policy 2/4 vs fixed-1 2/4, fixed-4 0/4" in text
    assert "vs fixed-1: 1 won, 1 lost" in text
    assert "vs fixed-4: 2 won, 0 lost" in text


def test_an_unplanned_policy_request_fails_the_verdict() -> None:
    outcomes = _run({"fixed-1": "10", "fixed-4": "10", "policy": "11"})
    outcomes[-1].plan = None
    result, text = verdict(outcomes)
    assert unplanned(outcomes) == 1
    assert result is Verdict.FAIL
    assert "1 policy requests were NOT planned" in text


def test_table_rows() -> None:
    outcomes = _run({"fixed-1": "10", "fixed-4": "00", "policy": "11"})
    outcomes[0].latency_s = BUDGET + 0.6  # within the slack
    outcomes[2].latency_s = BUDGET + 5.0  # fixed-4 over budget
    outcomes[3] = _outcome("fixed-4", "p1", False, error="HTTP 500: boom")
    outcomes[5].plan = PlanChoice("plain", 1, None, True)
    outcomes[5].n_branches = 1
    lines = config_table(outcomes, budget_s=BUDGET).splitlines()
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[1:] for line in lines}
    assert rows["fixed-1"] == ["2", "0", "50.0%", "15.3", "20.6", "0", "200", "N=1 plain ×2", "— |"]
    assert rows["fixed-4"] == ["2", "1", "0.0%", "25.0", "25.0", "1", "200", "N=4 plain ×1", "— |"]
    assert rows["policy"][2:7] == ["100.0%", "10.0", "10.0", "0", "200"]
    assert rows["policy"][7:] == ["N=1 plain ×1, N=2 plain ×1", "none ×2 |"]


def test_plan_summary_counts_plans_that_fit() -> None:
    outcomes = _run({"policy": "110"})
    outcomes[0].plan = PlanChoice("plain", 1, None, False, 30.0, 0.07)
    outcomes[1].plan = PlanChoice("plain", 2, None, True, 10.0, 0.1)
    outcomes[2].plan = None
    assert plan_summary(outcomes) == (
        "Policy requests planned: 2/3; predicted within the budget: 1, nothing predicted within "
        "it (the fastest configuration taken): 1; mean predicted latency 20.0 s. Chosen pool's "
        "step time at N=1 in the plans (live updates): first plain 70 ms, last plain 100 ms."
    )


def test_plan_summary_without_plans() -> None:
    outcomes = _run({"policy": "1"})
    outcomes[0].plan = None
    assert plan_summary(outcomes) == (
        "Policy requests planned: 0/1; predicted within the budget: 0, nothing predicted within "
        "it (the fastest configuration taken): 0."
    )


def _profile_run() -> ProfileRun:
    profile = PoolProfile(
        pool="plain",
        engine="llama_cpp",
        model="m",
        step_times=(StepTimePoint(concurrency=1, step_time_s=0.05),),
        prefill_tokens_per_s=70.0,
        max_concurrency=4,
    )
    sample = ConcurrencySample(
        concurrency=1,
        wall_s=3.3,
        streams=(StreamTiming(ttft_s=0.1, decode_s=3.15, tokens=64),),
        counters=CounterDelta(generated_tokens=64, requests=1),
    )
    prefill = PrefillSample(prompt_tokens=128, seconds=1.8, source="engine")
    return ProfileRun(profile=profile, samples=(sample,), prefill=prefill, duration_s=9.0)


def test_a_recorded_result_renders_the_same_section(tmp_path: Path) -> None:
    outcomes = _run({"fixed-1": "10", "fixed-4": "00", "policy": "11"})
    outcomes[4].plan = PlanChoice("plain", 1, None, True, 12.5, 0.05)
    result = PolicyAccuracyResult(
        command="python -m benchmarks.policy_accuracy --problems 2 --budget 20",
        measured_at="2026-12-06 07:00 UTC",
        budget=BUDGET,
        temperature=0.6,
        problems=[("p0", 1), ("p1", 2)],
        runs=[_profile_run()],
        outcomes=outcomes,
    )
    result.save(tmp_path / "r.json")
    loaded = PolicyAccuracyResult.load(tmp_path / "r.json")
    assert loaded.outcomes == outcomes
    assert report(loaded) == report(result)
    body = report(result)
    assert "levels {1: 1, 2: 1}" in body
    assert "**Verdict: PASS**" in body
    assert body.startswith("Run: `python -m benchmarks.policy_accuracy --problems 2 --budget 20`")
