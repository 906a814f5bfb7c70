"""Policy experiments: the per-budget comparison and the computed verdict (a tie says TIE)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.policy_lab import (
    ConfigResult,
    Outcome,
    Verdict,
    compare,
    policy_markdown,
    run_policy_experiment,
    verdict_of,
)
from evals.simulation import SimulationLab

BANK = (
    Path(__file__).resolve().parents[3]
    / "evals"
    / "data"
    / "samples"
    / "qwen2.5-math_math_cot_100x8.jsonl"
)


def cfg(accuracy: float, latency: float) -> ConfigResult:
    return ConfigResult(
        label="c",
        pool="plain",
        n_branches=1,
        thinking_budget=None,
        accuracy=accuracy,
        mean_latency_s=latency,
        mean_tokens=1.0,
    )


@pytest.mark.parametrize(
    ("policy", "best", "outcome"),
    [
        (cfg(0.9, 5), cfg(0.8, 5), Outcome.BETTER),
        (cfg(0.8, 4), cfg(0.8, 5), Outcome.TIE),  # faster is not more accurate
        (cfg(0.7, 5), cfg(0.8, 5), Outcome.WORSE),
        (cfg(0.99, 11), cfg(0.8, 5), Outcome.WORSE),  # over the 10 s budget
        (cfg(0.8, 9), None, Outcome.BETTER),
        (cfg(0.8, 11), None, Outcome.TIE),  # nothing fits, the policy neither
    ],
    ids=["better", "tie", "worse", "over-budget", "only-policy-fits", "nothing-fits"],
)
def test_compare(policy: ConfigResult, best: ConfigResult | None, outcome: Outcome) -> None:
    assert compare(policy, best, 10.0)[0] is outcome


@pytest.mark.parametrize(
    ("outcomes", "verdict"),
    [
        ([Outcome.BETTER, Outcome.BETTER, Outcome.TIE], Verdict.PASS),
        ([Outcome.BETTER, Outcome.TIE, Outcome.TIE], Verdict.TIE),
        ([Outcome.TIE, Outcome.TIE], Verdict.TIE),
        ([Outcome.BETTER, Outcome.BETTER, Outcome.WORSE], Verdict.FAIL),
    ],
    ids=["two-better", "one-better", "all-ties", "one-worse"],
)
def test_verdict_is_computed(outcomes: list[Outcome], verdict: Verdict) -> None:
    assert verdict_of(outcomes) is verdict


async def test_experiment_on_the_bank_writes_a_table_with_its_verdict() -> None:
    async with SimulationLab([BANK]) as lab:
        lab.groups = lab.groups[:30]
        report = await run_policy_experiment(
            lab, profile="cpu", budgets_s=[1.5, 4.0], n_branches=(1, 2), relative=True
        )
    assert report.problems == 30
    assert report.group_sizes == {8: 30}
    assert len(report.fixed) == 4  # 2 pools x 2 N x 1 budget
    fastest = min(c.mean_latency_s for c in report.fixed)
    budgets = [b.budget_s for b in report.budgets]
    assert budgets == pytest.approx([1.5 * fastest, 4 * fastest], abs=1e-3)
    assert report.verdict is verdict_of([b.outcome for b in report.budgets])
    text = policy_markdown(report, command="cmd")
    assert f"**Verdict: {report.verdict.value}**" in text
    assert "Command: `cmd`" in text
