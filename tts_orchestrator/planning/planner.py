"""Plan one request under its latency budget: which pool, how many branches, what thinking budget.

The :class:`Planner` is the service's face of the pure policies: pool profiles (measured by
``tts-orchestrator profile``), the :class:`~policies.latency.LatencyModel`, an accuracy estimator
(fitted from eval logs, else the documented default curve) and the
:class:`~policies.allocator.Allocator`. No Ray, no HTTP: the orchestrator calls :meth:`Planner.plan`
for a request with ``tts.latency_budget_s`` and no explicit ``tts.n_branches``, and stores
:meth:`Plan.record` in the request record.

The default branch-length distribution is documented with the settings
(:mod:`tts_orchestrator.config.planning`); ``max_tokens`` caps the distribution per request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from policies.accuracy import (
    AccuracyEstimator,
    AccuracyModel,
    DefaultAccuracyCurve,
    ProblemSamples,
)
from policies.allocator import (
    AllocationDecision,
    AllocationGrid,
    AllocationRequest,
    Allocator,
)
from policies.latency import LatencyModel, LognormalBranchLengths
from policies.modes import ThinkingMode
from policies.profile import ProfileSet
from tts_orchestrator.config.planning import PlannerSettings
from tts_orchestrator.exceptions import ConfigError


class PlanRequest(BaseModel):
    """What the orchestrator knows about a request when it plans it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(..., description="Served model name; only its pools are considered.")
    prompt_tokens: int = Field(..., ge=0)
    latency_budget_s: float | None = Field(None, gt=0)
    target_accuracy: float | None = Field(None, gt=0, le=1)
    n_branches: int | None = Field(None, ge=1, description="Explicit N: the user's choice wins.")
    max_tokens: int | None = Field(None, ge=1)
    max_branches: int | None = Field(None, ge=1, description="Server cap on N.")
    pool: str | None = Field(None, description="Pinned pool (tts.pool).")
    pool_loads: dict[str, int] = Field(default_factory=dict)
    mode: ThinkingMode = ThinkingMode.SLOW
    dataset: str | None = None
    difficulty: str | None = None
    warmup_first: int | None = Field(
        None, ge=1, description="Warm-up branches that run before the others start."
    )


class Plan(BaseModel):
    """The planner's choice and the decision table behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: str
    n_branches: int
    thinking_budget: int | None
    decision: AllocationDecision
    profiles: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Identity of each profile used (pool -> facts)."
    )
    latency_model: dict[str, Any] = Field(default_factory=dict)
    accuracy_source: str = ""

    def record(self, *, max_candidates: int = 16) -> dict[str, Any]:
        """A JSON-able summary for the request record (``RequestRecord.plan``)."""
        chosen = self.decision.chosen
        rows = self.decision.table()[:max_candidates]
        keep = (
            "pool",
            "n_branches",
            "thinking_budget",
            "predicted_latency_s",
            "predicted_accuracy",
            "feasible",
            "why",
        )
        return {
            "pool": self.pool,
            "n_branches": self.n_branches,
            "thinking_budget": self.thinking_budget,
            "predicted_latency_s": round(chosen.predicted_latency_s, 4),
            "predicted_accuracy": round(chosen.predicted_accuracy, 4),
            "objective": self.decision.objective.value,
            "search": self.decision.search.value,
            "met_constraints": self.decision.met_constraints,
            "explanation": self.decision.explanation,
            "candidates": [{k: _rounded(row[k]) for k in keep} for row in rows],
            "profiles": self.profiles,
            "latency_model": self.latency_model,
            "accuracy": self.accuracy_source,
        }


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def load_accuracy(path: str | Path | None, **fit_kwargs: Any) -> AccuracyEstimator:
    """Fit an :class:`AccuracyModel` from a JSONL of ``ProblemSamples``; None: the default."""
    if path is None:
        return DefaultAccuracyCurve()
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    records = [ProblemSamples.model_validate_json(line) for line in lines if line.strip()]
    if not records:
        raise ConfigError(f"accuracy logs {path} hold no problems")
    return AccuracyModel.fit(records, **fit_kwargs)


class Planner:
    """Chooses (pool, N, thinking budget) for requests from the current pool profiles."""

    def __init__(
        self,
        profiles: ProfileSet,
        *,
        accuracy: AccuracyEstimator | None = None,
        settings: PlannerSettings | None = None,
        latency: LatencyModel | None = None,
    ) -> None:
        self.settings = settings or PlannerSettings()
        self.profiles = profiles
        self.accuracy = accuracy or DefaultAccuracyCurve()
        # One latency model for the planner's life: it caches order statistics.
        self.latency = latency or self.settings.latency_model()

    def with_profiles(self, profiles: ProfileSet) -> Planner:
        """The same planner over newer profiles (live updates); caches are kept."""
        return Planner(
            profiles, accuracy=self.accuracy, settings=self.settings, latency=self.latency
        )

    def pools_for(self, model: str) -> tuple[str, ...]:
        return tuple(sorted(p.pool for p in self.profiles.profiles if p.model == model))

    def can_plan(self, model: str) -> bool:
        return bool(self.pools_for(model))

    def plan(self, request: PlanRequest) -> Plan:
        """The allocation for ``request``; ConfigError when no pool of its model is profiled."""
        pools = self.pools_for(request.model)
        if request.pool is not None:
            pools = tuple(p for p in pools if p == request.pool)
        if not pools:
            raise ConfigError(
                f"no profile for the pools of model {request.model!r}"
                + (f" (pinned pool {request.pool!r})" if request.pool else "")
                + f"; profiled pools: {self.profiles.pools}. Run `tts-orchestrator profile`.",
                code="no_profile",
            )
        if request.latency_budget_s is None and request.target_accuracy is None:
            raise ConfigError("a plan needs latency_budget_s or target_accuracy")
        grid = AllocationGrid(
            n_branches=_capped(self.settings.n_branches, request.max_branches),
            thinking_budgets=self.settings.thinking_budgets,
            pools=pools,
        )
        allocator = Allocator(
            self.profiles,
            latency=self.latency,
            accuracy=self.accuracy,
            grid=grid,
            search=self.settings.search,
        )
        n_fixed = request.n_branches
        if n_fixed is not None and request.max_branches is not None:
            n_fixed = min(n_fixed, request.max_branches)
        decision = allocator.allocate(
            AllocationRequest(
                prompt_tokens=request.prompt_tokens,
                latency_budget_s=request.latency_budget_s,
                target_accuracy=request.target_accuracy,
                n_branches=n_fixed,
                mode=request.mode,
                dataset=request.dataset,
                difficulty=request.difficulty,
                max_tokens=request.max_tokens,
                pool_loads={p: request.pool_loads.get(p, 0) for p in pools},
                warmup_first=request.warmup_first,
            )
        )
        chosen = decision.chosen
        return Plan(
            pool=chosen.pool,
            n_branches=chosen.n_branches,
            thinking_budget=chosen.thinking_budget,
            decision=decision,
            profiles={p: _profile_facts(self.profiles, p) for p in pools},
            latency_model=_latency_facts(self.latency),
            accuracy_source=_accuracy_source(self.accuracy),
        )


def _capped(values: Sequence[int], cap: int | None) -> tuple[int, ...]:
    if cap is None:
        return tuple(values)
    kept = tuple(v for v in values if v <= cap)
    return kept or (cap,)


def _profile_facts(profiles: ProfileSet, pool: str) -> dict[str, Any]:
    p = profiles.get(pool)
    return {
        "engine": p.engine,
        "speculative": p.speculative_method.value,
        "depth": p.speculative_depth,
        "accepted_tokens_per_step": round(p.accepted_tokens_per_step, 3),
        "step_time_s_at_1": round(p.step_time_s(1), 5),
        "measured_at": p.measured_at.isoformat(),
        "machine": p.machine,
        "observations": p.observations,
    }


def _latency_facts(model: LatencyModel) -> dict[str, Any]:
    lengths = model.lengths
    facts: dict[str, Any] = {"lengths": lengths.kind, "overhead_s": model.overhead_s}
    if isinstance(lengths, LognormalBranchLengths):
        facts["median_tokens"] = round(math.exp(lengths.mu), 1)
        facts["sigma"] = lengths.sigma
    else:
        facts["samples"] = len(lengths.samples)
    facts["finish_fraction"] = model.finish_fraction
    facts["trim_factor"] = model.trim_factor
    return facts


def _accuracy_source(accuracy: AccuracyEstimator) -> str:
    if isinstance(accuracy, AccuracyModel):
        return f"eval logs: {len(accuracy.curves)} bootstrapped curves"
    if isinstance(accuracy, DefaultAccuracyCurve):
        return "default curve (placeholder, no eval logs)"
    return type(accuracy).__name__
