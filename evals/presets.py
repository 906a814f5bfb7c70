"""Prompting and sampling presets: how a problem becomes a chat request body.

Presets are plain data in read-only mappings keyed by enums, so adding one is a one-line change
and a typo fails at the CLI with the list of valid names.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from evals.datasets import Problem

__all__ = [
    "PROMPT_PRESETS",
    "SAMPLING_PRESETS",
    "PromptPreset",
    "PromptPresetName",
    "SamplingPreset",
    "SamplingPresetName",
]

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class PromptPreset(BaseModel):
    """Turns a problem into chat messages."""

    model_config = ConfigDict(frozen=True)

    system: str | None = Field(default=None, description="Optional system message.")
    user_template: str = Field(
        default="{problem}\n" + BOXED_INSTRUCTION.replace("{}", "{{}}"),
        description="User message; ``{problem}`` is replaced by the problem text.",
    )

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        user = self.user_template.format(problem=problem.problem)
        messages.append({"role": "user", "content": user})
        return messages


class PromptPresetName(enum.StrEnum):
    BOXED = "boxed"
    """Problem followed by the common step-by-step / \\boxed{} instruction (user turn only)."""
    BOXED_SYSTEM = "boxed-system"
    """The same instruction as a system message, problem alone in the user turn."""


PROMPT_PRESETS: Mapping[PromptPresetName, PromptPreset] = MappingProxyType(
    {
        PromptPresetName.BOXED: PromptPreset(),
        PromptPresetName.BOXED_SYSTEM: PromptPreset(
            system=BOXED_INSTRUCTION, user_template="{problem}"
        ),
    }
)


class SamplingPreset(BaseModel):
    """Decoding parameters sent with every request."""

    model_config = ConfigDict(frozen=True)

    temperature: float = Field(default=0.6, ge=0.0, description="Sampling temperature.")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(default=None, ge=1, description="Completion token cap.")
    seed: int | None = Field(
        default=None, description="Base seed; sample i of a problem is sent seed + i."
    )

    def body(self, *, sample_index: int) -> dict[str, Any]:
        body: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.seed is not None:
            body["seed"] = self.seed + sample_index
        return body


class SamplingPresetName(enum.StrEnum):
    REASONING = "reasoning"
    """Temperature 0.6, top-p 0.95: the usual setting for R1-style reasoning models."""
    GREEDY = "greedy"
    """Temperature 0: deterministic decoding (n > 1 then only measures engine nondeterminism)."""


SAMPLING_PRESETS: Mapping[SamplingPresetName, SamplingPreset] = MappingProxyType(
    {
        SamplingPresetName.REASONING: SamplingPreset(temperature=0.6, top_p=0.95),
        SamplingPresetName.GREEDY: SamplingPreset(temperature=0.0, top_p=1.0),
    }
)
