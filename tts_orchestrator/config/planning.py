"""The `policy` section: the latency planner's grids, profiles, accuracy logs and cost model.

Default branch-length distribution (used until a workload's own lengths are configured): a
lognormal with median ``DEFAULT_MEDIAN_TOKENS`` and log-standard-deviation ``DEFAULT_SIGMA``.
These are PLACEHOLDERS of the right order for a small instruct model answering MATH-500-style
problems without a thinking mode (a few hundred tokens, spread about x1.6 either way), not a
measurement. ``python -m benchmarks.latency_model`` prints a lognormal fit of the branch lengths
it records on the CPU default; put those numbers here (or set ``lengths`` in the settings).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from policies.allocator import SearchMethod
from policies.latency import BranchLengths, LatencyModel, LognormalBranchLengths

DEFAULT_MEDIAN_TOKENS = 330.0
DEFAULT_SIGMA = 0.45


def default_branch_lengths() -> LognormalBranchLengths:
    """The documented default branch-length distribution (see the module docstring)."""
    return LognormalBranchLengths.from_median(DEFAULT_MEDIAN_TOKENS, sigma=DEFAULT_SIGMA)


class PlannerSettings(BaseModel):
    """The latency policy's settings (a sub-config of the service's root settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="Plan requests that give a latency budget.")
    profiles_path: str | None = Field(
        None, description="Profiles JSON written by `tts-orchestrator profile` (read at start)."
    )
    accuracy_logs: str | None = Field(
        None, description="JSONL of per-problem branch samples; unset: the default curve."
    )
    n_branches: tuple[int, ...] = Field((1, 2, 4, 8), min_length=1, description="N grid.")
    thinking_budgets: tuple[int | None, ...] = Field(
        (None,), min_length=1, description="Thinking-budget grid in tokens; null: unlimited."
    )
    search: SearchMethod = SearchMethod.GREEDY
    lengths: BranchLengths | None = Field(
        None, description="Branch-length distribution; unset: the documented default."
    )
    answer_tokens_after_cut: int = Field(64, ge=0, description="Answer after a thinking cut.")
    overhead_s: float = Field(0.1, ge=0, description="Orchestration and voting per request.")
    finish_fraction: float = Field(
        1.0, gt=0, le=1, description="Early consensus: share of branches waited for."
    )
    trim_factor: float = Field(1.0, gt=0, le=1, description="Trimming shortens branches to this.")
    live_update_interval_s: float = Field(
        5.0, gt=0, description="How often live traffic is folded into the stored profiles."
    )

    def latency_model(self) -> LatencyModel:
        return LatencyModel(
            lengths=self.lengths or default_branch_lengths(),
            answer_tokens_after_cut=self.answer_tokens_after_cut,
            finish_fraction=self.finish_fraction,
            trim_factor=self.trim_factor,
            overhead_s=self.overhead_s,
        )
