"""The planner: (pool, N, thinking budget) decisions from pool profiles, and the `plan` CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from policies.accuracy import AccuracyModel, BranchSample, DefaultAccuracyCurve, ProblemSamples
from policies.allocator import SearchMethod
from policies.profile import PoolProfile, ProfileSet, SpeculativeMethod, StepTimePoint
from policies.reference import CPU_MEASURED, DEFAULT_REFERENCE
from tts_orchestrator.config.planning import (
    DEFAULT_MEDIAN_TOKENS,
    PlannerSettings,
    default_branch_lengths,
)
from tts_orchestrator.exceptions import ConfigError
from tts_orchestrator.planning.cli import load_profiles, plan_app, plan_from_profiles, profile_app
from tts_orchestrator.planning.planner import Planner, PlanRequest, load_accuracy

MODEL = "qwen2.5-coder-1.5b-instruct"


def _profile(
    pool: str,
    steps: dict[int, float],
    *,
    accepted: float = 1.0,
    depth: int = 0,
    model: str = MODEL,
    slots: int = 4,
) -> PoolProfile:
    return PoolProfile(
        pool=pool,
        engine="llama_cpp",
        model=model,
        speculative_method=SpeculativeMethod.DRAFT if depth else SpeculativeMethod.NONE,
        speculative_depth=depth,
        accepted_tokens_per_step=accepted,
        step_times=tuple(StepTimePoint(concurrency=b, step_time_s=s) for b, s in steps.items()),
        prefill_tokens_per_s=100.0,
        max_concurrency=slots,
    )


# Shaped like the CPU measurements: plain 1.5B ~13 tokens/s alone; the draft pool verifies 5
# tokens with the 0.5B drafting, ~2.7 tokens per step at 4x the step time: slower per token.
PLAIN = _profile("plain", {1: 0.077, 2: 0.11, 4: 0.2})
DRAFT_SLOW = _profile("draft", {1: 0.31, 2: 0.45, 4: 0.8}, accepted=2.7, depth=4)
# The same draft pool on hardware where verification is nearly free (a GPU-like profile).
DRAFT_FAST = _profile("draft", {1: 0.09, 2: 0.12, 4: 0.21}, accepted=2.7, depth=4)


def _request(budget: float | None = 60.0, **kw: object) -> PlanRequest:
    return PlanRequest.model_validate(
        {"model": MODEL, "prompt_tokens": 150, "latency_budget_s": budget, "max_tokens": 512, **kw}
    )


@pytest.mark.parametrize(
    ("draft", "expected_pool"),
    [
        pytest.param(DRAFT_SLOW, "plain", id="speculation-slower-here-picks-plain"),
        pytest.param(DRAFT_FAST, "draft", id="speculation-pays-picks-draft"),
    ],
)
def test_pool_follows_the_measured_profiles(draft: PoolProfile, expected_pool: str) -> None:
    plan = Planner(ProfileSet.of([PLAIN, draft])).plan(_request(60.0))
    assert plan.pool == expected_pool
    assert plan.decision.met_constraints
    assert plan.decision.chosen.predicted_latency_s <= 60.0


def test_explicit_n_branches_wins() -> None:
    plan = Planner(ProfileSet.of([PLAIN, DRAFT_SLOW])).plan(_request(1000.0, n_branches=3))
    assert plan.n_branches == 3
    assert {c.n_branches for c in plan.decision.candidates} == {3}
    assert "N fixed by the request" in plan.decision.explanation


@pytest.mark.parametrize(
    ("cap", "allowed"),
    [
        pytest.param(2, {1, 2}, id="cap-2"),
        pytest.param(1, {1}, id="cap-1"),
        pytest.param(3, {1, 2}, id="cap-between-grid-values"),
    ],
)
def test_server_cap_on_branches(cap: int, allowed: set[int]) -> None:
    plan = Planner(ProfileSet.of([PLAIN])).plan(_request(10_000.0, max_branches=cap))
    assert {c.n_branches for c in plan.decision.candidates} <= allowed
    assert plan.n_branches == max(allowed)


def test_more_budget_never_lowers_predicted_accuracy_and_stays_within_it() -> None:
    planner = Planner(ProfileSet.of([PLAIN, DRAFT_SLOW]))
    accuracies = []
    for budget in np.geomspace(5, 500, 12):
        plan = planner.plan(_request(float(budget)))
        chosen = plan.decision.chosen
        if plan.decision.met_constraints:
            assert chosen.predicted_latency_s <= budget
        accuracies.append(chosen.predicted_accuracy)
    assert accuracies == sorted(accuracies)
    assert accuracies[-1] > accuracies[0]  # the grid is actually explored


def test_budget_too_small_takes_the_fastest_and_says_so() -> None:
    plan = Planner(ProfileSet.of([PLAIN, DRAFT_SLOW])).plan(_request(0.5))
    assert not plan.decision.met_constraints
    assert (plan.pool, plan.n_branches) == ("plain", 1)
    assert plan.record()["met_constraints"] is False


def test_a_loaded_pool_is_avoided() -> None:
    other = _profile("plain-b", {1: 0.077, 2: 0.11, 4: 0.2})
    planner = Planner(ProfileSet.of([PLAIN, other]))
    plan = planner.plan(_request(60.0, pool_loads={"plain": 4}))
    assert plan.pool == "plain-b"


def test_only_pools_of_the_requested_model_or_the_pinned_pool() -> None:
    other_model = _profile("smol", {1: 0.001}, model="smollm2-135m-instruct")
    planner = Planner(ProfileSet.of([PLAIN, DRAFT_FAST, other_model]))
    assert {c.pool for c in planner.plan(_request()).decision.candidates} == {"plain", "draft"}
    pinned = planner.plan(_request(pool="plain"))
    assert {c.pool for c in pinned.decision.candidates} == {"plain"}


@pytest.mark.parametrize(
    ("model", "pool"),
    [pytest.param("unknown-model", None, id="model"), pytest.param(MODEL, "nope", id="pinned")],
)
def test_no_profile_is_a_config_error(model: str, pool: str | None) -> None:
    planner = Planner(ProfileSet.of([PLAIN]))
    assert planner.can_plan(MODEL)
    assert not planner.can_plan("unknown-model")
    with pytest.raises(ConfigError, match="tts-orchestrator profile") as info:
        planner.plan(_request(model=model, pool=pool))
    assert info.value.code == "no_profile"


def test_record_is_json_with_the_chosen_row_first() -> None:
    plan = Planner(ProfileSet.of([PLAIN, DRAFT_SLOW])).plan(_request(30.0))
    record = json.loads(json.dumps(plan.record()))
    assert (record["pool"], record["n_branches"]) == (plan.pool, plan.n_branches)
    assert record["candidates"][0]["why"] == "chosen"
    assert record["candidates"][0]["pool"] == plan.pool
    assert set(record["profiles"]) == {"plain", "draft"}
    assert record["latency_model"]["median_tokens"] == pytest.approx(DEFAULT_MEDIAN_TOKENS)
    assert record["accuracy"].startswith("default curve")
    assert len(plan.record(max_candidates=2)["candidates"]) == 2


def test_exhaustive_and_greedy_agree_on_the_default_curve() -> None:
    profiles = ProfileSet.of([PLAIN, DRAFT_SLOW])
    greedy = Planner(profiles)
    exhaustive = Planner(profiles, settings=PlannerSettings(search=SearchMethod.EXHAUSTIVE))
    for budget in (5.0, 20.0, 80.0, 300.0):
        g, e = greedy.plan(_request(budget)), exhaustive.plan(_request(budget))
        assert g.decision.chosen.predicted_accuracy == pytest.approx(
            e.decision.chosen.predicted_accuracy
        )


def test_with_profiles_keeps_the_models_and_sees_new_numbers() -> None:
    planner = Planner(ProfileSet.of([PLAIN, DRAFT_SLOW]))
    updated = planner.with_profiles(ProfileSet.of([PLAIN, DRAFT_FAST]))
    assert updated.latency is planner.latency
    assert updated.accuracy is planner.accuracy
    assert updated.plan(_request()).pool == "draft"


def test_default_lengths_are_the_documented_ones() -> None:
    lengths = default_branch_lengths()
    assert math.exp(lengths.mu) == pytest.approx(DEFAULT_MEDIAN_TOKENS)
    assert PlannerSettings().latency_model().lengths == lengths


def test_accuracy_from_eval_logs(tmp_path: Path) -> None:
    assert isinstance(load_accuracy(None), DefaultAccuracyCurve)
    logs = tmp_path / "samples.jsonl"
    problems = [
        ProblemSamples(
            problem_id=f"p{i}",
            samples=tuple(
                BranchSample(answer=str(j % 2), correct=j % 2 == 0, length=100) for j in range(4)
            ),
        )
        for i in range(3)
    ]
    logs.write_text("\n".join(p.model_dump_json() for p in problems) + "\n")
    model = load_accuracy(logs, n_bootstrap=16)
    assert isinstance(model, AccuracyModel)
    assert model.curves
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError, match="no problems"):
        load_accuracy(tmp_path / "empty.jsonl")


# -- the `plan` command ----------------------------------------------------------------------


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(profile_app, name="profile")
    app.add_typer(plan_app, name="plan")
    return app


def test_plan_command_prints_the_decision_table(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    ProfileSet.of([PLAIN, DRAFT_SLOW]).save(path)
    result = CliRunner().invoke(
        _cli(), ["plan", "--budget", "30", "--profiles", str(path)], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    expected = plan_from_profiles(load_profiles(path)[0], budget=30, prompt_tokens=200)
    assert "chosen" in result.output
    assert "budget 30 s" in result.output
    chosen_line = next(line for line in result.output.splitlines() if "chosen" in line)
    assert expected.pool in chosen_line
    assert f" {expected.n_branches} " in chosen_line


def _plan(*args: str) -> str:
    result = CliRunner().invoke(_cli(), ["plan", "--budget", "10", *args], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def _chosen(output: str) -> tuple[str, str, int]:
    """(pool, spec, N) of the chosen row of a printed decision table."""
    line = next(line for line in output.splitlines() if "chosen" in line)
    pool, spec, n = (cell.strip() for cell in line.strip("│┃ ").split("│")[:3])
    return pool, spec, int(n)


def test_plan_without_measured_profiles_uses_the_reference_and_says_so(tmp_path: Path) -> None:
    output = _plan("--profiles", str(tmp_path / "none.json"))
    assert "No measured profiles" in output
    assert "REFERENCE" in output
    assert f"'{DEFAULT_REFERENCE}'" in output
    assert "not measured" in output
    assert _chosen(output) == _chosen(_plan("--profile", DEFAULT_REFERENCE))


def test_plan_prefers_the_measured_file_and_profile_overrides_it(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    ProfileSet.of([PLAIN, DRAFT_SLOW]).save(path)
    measured = _plan("--profiles", str(path))
    assert f"measured, from {path}" in measured
    assert "REFERENCE" not in measured
    override = _plan("--profiles", str(path), "--profile", "h100-7b")
    assert "reference 'h100-7b'" in override


def test_plan_on_gpu_reference_takes_more_branches_and_speculates_where_cpu_does_not() -> None:
    """The roofline's prediction: at a 10 s budget a memory-bound GPU makes branches and
    speculation nearly free; the measured 2-core CPU can afford neither."""
    gpu, cpu = _plan("--profile", "h100-7b"), _plan("--profile", CPU_MEASURED)
    gpu_pool, gpu_spec, gpu_n = _chosen(gpu)
    cpu_pool, cpu_spec, cpu_n = _chosen(cpu)
    assert gpu_n > cpu_n
    assert gpu_spec.startswith("draft")
    assert cpu_spec == "none"
    assert (gpu_pool, cpu_pool) == ("draft", "plain")


def test_plan_with_an_unknown_reference_lists_the_shipped_ones() -> None:
    result = CliRunner().invoke(_cli(), ["plan", "--budget", "10", "--profile", "a100"])
    assert result.exit_code == 2
    assert "no reference profile 'a100'" in result.output
    assert "h100-7b" in result.output


def test_profile_command_rejects_an_unknown_pool(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[3] / "deploy" / "configs" / "cpu-speculative.yaml"
    result = CliRunner().invoke(_cli(), ["profile", "-c", str(config), "--pool", "nope"])
    assert result.exit_code == 2
    assert "no pool 'nope'" in result.output
    assert "plain" in result.output


def test_a_warm_up_first_early_stop_is_priced_in_two_phases() -> None:
    """Four slots, four branches: all at once is one wave; with a warm-up of 2 run first, the
    other 2 start after it: two waves of 2, each at a cheaper step but each as long as its
    slowest branch, so the same N takes longer (73 s -> 82 s here)."""
    planner = Planner(ProfileSet.of([PLAIN]))
    at_once = planner.plan(_request(1000.0, n_branches=4)).decision.chosen
    held = planner.plan(_request(1000.0, n_branches=4, warmup_first=2)).decision.chosen
    assert held.predicted_latency_s > 1.1 * at_once.predicted_latency_s
    # A warm-up that covers every branch changes nothing.
    same = planner.plan(_request(1000.0, n_branches=2, warmup_first=2)).decision.chosen
    alone = planner.plan(_request(1000.0, n_branches=2)).decision.chosen
    assert same.predicted_latency_s == pytest.approx(alone.predicted_latency_s)
