"""The `modes` section: default thinking mode, the effort table, the auto router and its probes."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from policies.modes import EffortPolicy, ThinkingMode


class UncertainAction(StrEnum):
    """What ``auto`` does when the stage-1 score falls between the thresholds."""

    PROBE = "probe"
    SLOW = "slow"
    FAST = "fast"


class ProbeCheck(StrEnum):
    """How stage 3 judges a probe."""

    AGREEMENT = "agreement"  # k fast samples must agree
    ANSWER_SIGNALS = "answer_signals"  # the first sample's own signals (policies.auto)


class ModesConfig(BaseModel):
    """Thinking modes: defaults, the effort table, the auto router and its probes."""

    model_config = ConfigDict(extra="forbid")

    default_mode: ThinkingMode | None = Field(
        None,
        description="Mode of requests that ask for none; unset: slow for families trained to "
        "think, fast for the others (what the model does unswitched).",
    )
    slow_thinking_budget: int | None = Field(
        None, ge=1, description="Thinking tokens of slow mode when the request sets none."
    )
    effort: EffortPolicy = Field(
        default_factory=EffortPolicy, description="reasoning_effort → mode and thinking budget."
    )
    router_model: str | None = Field(
        None, description="Stage-1 router JSON (`router fit`); unset: the shipped model."
    )
    on_uncertain: UncertainAction = Field(
        UncertainAction.PROBE, description="auto, when stage 1 is uncertain."
    )
    prefer_native_auto: bool = Field(
        True, description="auto uses a family's trained auto mode (openPangu) over the router."
    )
    probe_samples: int = Field(3, ge=1, le=16, description="Fast samples of a probe (k).")
    probe_max_tokens: int = Field(512, ge=1, description="Token cap of each probe sample.")
    probe_min_agreement: float = Field(
        1.0, gt=0.0, le=1.0, description="Share of probes that must agree to stay fast."
    )
    probe_check: ProbeCheck = Field(
        ProbeCheck.AGREEMENT,
        description="Stage 3: `agreement` of the k probes, or `answer_signals`: the first "
        "probe's answer judged by the auto policy's check (hedges, self-corrections, boxed "
        "result, length...; measured by `router evaluate`, docs/benchmarks.md). Use "
        "probe_samples: 1 with it.",
    )
    claim_timeout_s: float = Field(
        5.0,
        gt=0.0,
        description="probe_check answer_signals: time the probe's self-check (verifiers.claims: "
        "a false arithmetic step or stated roots that do not solve their equation escalate) may "
        "take off the event loop; past it no claim counts as refuted.",
    )
    auto_policy: str | None = Field(
        None,
        description="Auto policy JSON (`router fit --pair`) for probe_check answer_signals; "
        "unset: the shipped policies/data/auto-default.json.",
    )
