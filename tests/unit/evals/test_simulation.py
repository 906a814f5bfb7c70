"""The simulator: the product's own trimming / votes / early stop over banks, timed by a profile.

Acceptance checks of issue 15 live here: the shuffle test (nothing a live system could not know
steers a decision) and `simulate --trim` saving the share of thinking tokens `trim-replay` does.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from evals.sim_branches import BranchBank
from evals.simulation import SimulationLab, SimulationModel, decode_schedule
from policies.profile import PoolProfile, StepTimePoint
from tts_orchestrator.protocol import TtsOptions
from verifiers.judges import RuleJudge
from verifiers.traces import group_by_problem
from verifiers.trim_replay import load_replay_traces, replay

DATA = Path(__file__).resolve().parents[3] / "evals" / "data"
ANCHORS = [
    DATA / "traces" / "thought-anchors_deepseek-r1-distill-qwen-14b_math.jsonl",
    DATA / "traces" / "thought-anchors_deepseek-r1-distill-llama-8b_math.jsonl",
]
QWQ_MATH = DATA / "traces" / "mip_qwq-32b_math500.jsonl"
BANK = DATA / "samples" / "qwen2.5-math_math_cot_100x8.jsonl"
PLAIN = SimulationModel(profile="cpu", pool="plain")


def _profile(slots: int) -> PoolProfile:
    return PoolProfile(
        pool="p",
        engine="test",
        model="m",
        measured_at=datetime(2026, 1, 1, tzinfo=UTC),
        step_times=(
            StepTimePoint(concurrency=1, step_time_s=0.1),
            StepTimePoint(concurrency=2, step_time_s=0.2),
        ),
        prefill_tokens_per_s=100.0,
        max_concurrency=slots,
    )


@pytest.mark.parametrize(
    ("lengths", "slots", "finish"),
    [
        ([10], 1, [1.0]),
        # Two at once: 5 tok/s each until the short one ends at 2 s, then 10 tok/s alone.
        ([10, 20], 2, [2.0, 3.0]),
        # One slot: the second waits for the first.
        ([10, 20], 1, [1.0, 3.0]),
    ],
    ids=["alone", "shared", "queued"],
)
def test_decode_schedule(lengths: list[int], slots: int, finish: list[float]) -> None:
    done, produced = decode_schedule(lengths, _profile(slots))
    assert done == pytest.approx(finish)
    assert produced == pytest.approx(lengths)


def test_decode_schedule_until_counts_partial_progress() -> None:
    _, produced = decode_schedule([10, 20], _profile(2), until=2.0)
    assert produced == pytest.approx([10, 10])
    _, queued = decode_schedule([10, 20], _profile(1), until=1.0)
    assert queued == pytest.approx([10, 0])


@pytest.fixture(scope="module")
async def bank_lab() -> AsyncIterator[SimulationLab]:
    async with SimulationLab([BANK]) as lab:
        lab.groups = lab.groups[:40]
        yield lab


async def test_accuracy_moves_with_n_on_a_multi_sample_bank(bank_lab: SimulationLab) -> None:
    one = await bank_lab.run(TtsOptions(n_branches=1), PLAIN.model_copy(update={"samples": 4}))
    eight = await bank_lab.run(TtsOptions(n_branches=8), PLAIN)
    assert one.group_sizes == eight.group_sizes == {8: 40}
    assert eight.accuracy > one.accuracy
    assert eight.mean_latency_s > one.mean_latency_s  # 8 branches share 4 slots of 2 cores
    # The eight branches of a request are the group's eight distinct samples.
    assert all(len(set(r.branch_ids)) == 8 for r in eight.requests)


async def test_n_past_the_group_size_is_left_out_not_padded(bank_lab: SimulationLab) -> None:
    result = await bank_lab.run(TtsOptions(n_branches=9), PLAIN)
    assert (result.problems, result.problems_left_out, result.requests) == (0, 40, [])


async def test_early_stop_uses_the_services_rules(bank_lab: SimulationLab) -> None:
    full = await bank_lab.run(TtsOptions(n_branches=8), PLAIN)
    beta = await bank_lab.run(TtsOptions(n_branches=8, early_stop="beta"), PLAIN)
    # A majority vote also stops once decided (SafeLead); the Beta rule stops sooner.
    stopped = [r for r in beta.requests if r.stopped_early]
    assert len(stopped) >= sum(r.stopped_early for r in full.requests)
    assert any("P(leader beats runner-up)" in r.stop_reason for r in stopped)
    assert beta.mean_latency_s < full.mean_latency_s
    assert sum(r.answer_tokens for r in beta.requests) < sum(r.answer_tokens for r in full.requests)


def _shuffled(lab: SimulationLab, seed: int) -> None:
    """Permute ground truth, the source's final answer and its label across every record."""
    traces = [t for g in lab.groups for t in g.traces]
    rng = random.Random(seed)
    fields = {
        name: rng.sample([getattr(t, name) for t in traces], len(traces))
        for name in ("ground_truth", "final_answer", "is_correct")
    }
    lab.groups = group_by_problem(
        t.model_copy(update={name: values[i] for name, values in fields.items()})
        for i, t in enumerate(traces)
    )
    old = lab.bank  # a fresh branch cache: every branch is played again on the shuffled records
    lab.bank = BranchBank(counter=old.counter, judge=old.judge, checker=lab.checker)


@pytest.mark.parametrize(
    "tts",
    [
        TtsOptions(n_branches=2, trim=True, early_stop="unanimous_window", early_stop_window=2),
        TtsOptions(n_branches=4, trim=True, thinking_budget=3000),
        TtsOptions(n_branches=3, aggregation="first_finish"),
        TtsOptions(latency_budget_s=900.0, trim=True, early_stop="beta"),
    ],
    ids=["trim-unanimous", "trim-budget", "first-finish", "planner"],
)
async def test_shuffle_ground_truth_answers_and_labels_changes_no_decision(
    tts: TtsOptions,
) -> None:
    async with SimulationLab(ANCHORS) as lab:
        before = await lab.run(tts, PLAIN)
        _shuffled(lab, seed=7)
        after = await lab.run(tts, PLAIN)
    assert before.problems == after.problems == 10
    assert [r.decisions() for r in before.requests] == [r.decisions() for r in after.requests]
    assert before.thinking_tokens == after.thinking_tokens
    assert before.trim_saved_fraction == after.trim_saved_fraction
    assert before.accuracy != after.accuracy or tts.n_branches in (None, 3)


async def test_simulate_trim_saves_what_trim_replay_saves() -> None:
    """Same file, same rules: the shares agree within 1 pt (the simulator counts Qwen2.5 tokens,
    trim-replay word pieces)."""
    async with SimulationLab([QWQ_MATH]) as lab:
        simulated = await lab.run(TtsOptions(n_branches=1, trim=True), PLAIN)
        report = await replay(
            load_replay_traces([QWQ_MATH]), judge=RuleJudge(lab.checker), checker=lab.checker
        )
    assert simulated.problems == report.totals.traces == 52
    assert 100 * simulated.trim_saved_fraction == pytest.approx(report.totals.saved_pct, abs=1.0)
    assert simulated.trim_saved_fraction > 0.3


@pytest.mark.parametrize(
    ("tts", "message"),
    [
        (TtsOptions(aggregation="weighted"), "logprobs"),
        (TtsOptions(aggregation="confidence"), "benchmarks.deepconf"),
        (TtsOptions(early_stop="confidence"), "benchmarks.deepconf"),
        (TtsOptions(mode="fast"), "cannot be replayed"),
    ],
    ids=["weighted", "confidence-vote", "confidence-stop", "fast-mode"],
)
async def test_unsupported_options_are_refused(
    bank_lab: SimulationLab, tts: TtsOptions, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await bank_lab.run(tts, PLAIN)


def test_unknown_profile_lists_the_known_ones() -> None:
    from evals.simulation import load_profile

    with pytest.raises(ValueError, match=r"'cpu'"):
        load_profile("h100-nonexistent")


async def test_a_latency_budget_goes_through_the_services_planner(
    bank_lab: SimulationLab,
) -> None:
    tight = await bank_lab.run(TtsOptions(latency_budget_s=5.0), PLAIN)
    loose = await bank_lab.run(TtsOptions(latency_budget_s=600.0), PLAIN)
    assert all(r.planned for r in tight.requests + loose.requests)
    assert {r.n_branches for r in tight.requests} == {1}
    assert max(r.n_branches for r in loose.requests) > 1
    assert tight.problems == loose.problems == 40  # the planner's N is capped at the group


def test_simulate_cli_prints_the_json_the_issue_asks_for() -> None:
    from typer.testing import CliRunner

    from tts_orchestrator.cli import app

    result = CliRunner().invoke(
        app,
        ["simulate", "--traces", str(ANCHORS[0]), "--n-branches", "2", "--trim", "--json"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert {"accuracy", "mean_latency_s", "thinking_tokens", "trim_saved_fraction"} <= set(out)
    assert out["problems"] == 10
    assert out["group_sizes"] == {"2": 10}
    assert "Qwen2.5" in out["tokenizer"]
    assert out["trim_saved_fraction"] > 0
