"""Thinking modes and the mapping of OpenAI's ``reasoning_effort`` onto them.

``fast`` answers without a chain of thought, ``slow`` thinks (optionally under a token budget),
``auto`` lets the router decide per request. OpenAI's ``reasoning_effort`` is mapped by a small
configurable table: ``none`` / ``minimal`` / ``low`` → fast, ``medium`` / ``high`` → slow with a
thinking budget each.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ThinkingMode(StrEnum):
    """How a request is answered."""

    FAST = "fast"
    SLOW = "slow"
    AUTO = "auto"


class ReasoningEffort(StrEnum):
    """OpenAI's ``reasoning_effort`` values (``none`` and ``minimal`` exist for newer models)."""

    NONE = "none"
    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ModeSetting(BaseModel):
    """A concrete mode and its thinking budget in tokens (``None``: only ``max_tokens`` caps it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: ThinkingMode
    thinking_budget: int | None = Field(default=None, ge=0, description="Thinking tokens allowed.")


def _default_effort_table() -> dict[ReasoningEffort, ModeSetting]:
    fast = ModeSetting(mode=ThinkingMode.FAST, thinking_budget=0)
    return {
        ReasoningEffort.NONE: fast,
        ReasoningEffort.MINIMAL: fast,
        ReasoningEffort.LOW: fast,
        ReasoningEffort.MEDIUM: ModeSetting(mode=ThinkingMode.SLOW, thinking_budget=2048),
        ReasoningEffort.HIGH: ModeSetting(mode=ThinkingMode.SLOW, thinking_budget=8192),
    }


class EffortPolicy(BaseModel):
    """Maps ``reasoning_effort`` to a mode and budget; every effort level must be covered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    table: dict[ReasoningEffort, ModeSetting] = Field(
        default_factory=_default_effort_table,
        description="Mode and thinking budget per effort level.",
    )

    def setting_for(self, effort: ReasoningEffort | str) -> ModeSetting:
        """The mode setting of an effort level; raises ValueError naming the valid levels."""
        try:
            key = ReasoningEffort(effort)
        except ValueError:
            valid = ", ".join(e.value for e in ReasoningEffort)
            raise ValueError(f"unknown reasoning_effort {effort!r}; valid: {valid}") from None
        if key not in self.table:
            covered = ", ".join(e.value for e in self.table)
            raise ValueError(f"reasoning_effort {key.value!r} not in the table ({covered})")
        return self.table[key]


def mode_for_effort(
    effort: ReasoningEffort | str, policy: EffortPolicy | None = None
) -> ModeSetting:
    """Map OpenAI's ``reasoning_effort`` to a thinking mode and budget (default table if none)."""
    return (policy or EffortPolicy()).setting_for(effort)
