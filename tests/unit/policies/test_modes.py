from __future__ import annotations

import pytest

from policies.modes import EffortPolicy, ModeSetting, ReasoningEffort, ThinkingMode, mode_for_effort


@pytest.mark.parametrize(
    ("effort", "mode", "budget"),
    [
        pytest.param("none", ThinkingMode.FAST, 0, id="none"),
        pytest.param("minimal", ThinkingMode.FAST, 0, id="minimal"),
        pytest.param("low", ThinkingMode.FAST, 0, id="low"),
        pytest.param("medium", ThinkingMode.SLOW, 2048, id="medium"),
        pytest.param(ReasoningEffort.HIGH, ThinkingMode.SLOW, 8192, id="high-enum"),
    ],
)
def test_default_effort_table(effort: str, mode: ThinkingMode, budget: int) -> None:
    assert mode_for_effort(effort) == ModeSetting(mode=mode, thinking_budget=budget)


def test_a_configured_table_overrides_the_default() -> None:
    policy = EffortPolicy(
        table={ReasoningEffort.LOW: ModeSetting(mode=ThinkingMode.SLOW, thinking_budget=256)}
    )
    assert mode_for_effort("low", policy).thinking_budget == 256
    with pytest.raises(ValueError, match="'high' not in the table \\(low\\)"):
        mode_for_effort("high", policy)


def test_unknown_effort_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown reasoning_effort 'max'; valid: none, minimal"):
        mode_for_effort("max")


def test_effort_policy_round_trips_through_json() -> None:
    policy = EffortPolicy()
    assert EffortPolicy.model_validate_json(policy.model_dump_json()) == policy
