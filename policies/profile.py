"""Measured worker profiles: what one pool's worker costs per decode step and per prompt token.

A :class:`PoolProfile` is measured by the profiler on the real worker (engine, model and machine
recorded with it) and read by the latency model. Definitions:

* ``step_time_s(B)`` — wall time of one decode iteration of the engine while ``B`` sequences
  decode concurrently, *including* drafting and verification when the pool speculates. Measured
  at a few concurrencies; between points it is interpolated linearly, below the first point it is
  the first point's value, beyond the last point it is extrapolated along the last segment's
  slope (never decreasing).
* ``accepted_tokens_per_step`` — mean tokens each sequence gains per iteration (accepted draft
  tokens plus the target's own token); exactly 1.0 without speculation.
* Per-sequence decode rate at concurrency ``B`` = ``accepted_tokens_per_step / step_time_s(B)``.
  Speculation pays on a machine only when this beats the plain pool's ``1 / step_time_s(B)``.

Live traffic keeps a profile current through :meth:`PoolProfile.observe` (exponential moving
averages); profiles are immutable, every update returns a new one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SpeculativeMethod(StrEnum):
    """Speculative decoding a pool was started with (an engine-wide setting)."""

    NONE = "none"
    DRAFT = "draft"
    NGRAM = "ngram"
    EAGLE = "eagle"
    EAGLE3 = "eagle3"
    MTP = "mtp"


class StepTimePoint(BaseModel):
    """One measurement: decode step time at a concurrency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(..., ge=1, description="Sequences decoding at once.")
    step_time_s: float = Field(..., gt=0, description="Wall time of one decode iteration.")


class PoolProfile(BaseModel):
    """The measured cost model of one pool's worker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: str = Field(..., min_length=1, description="Pool name in the config.")
    engine: str = Field(..., description="Engine kind, e.g. llama_cpp or vllm.")
    model: str = Field(..., description="Target model the pool serves.")
    machine: str = Field(default="", description="Where it was measured (host, CPU/GPU, threads).")
    measured_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    speculative_method: SpeculativeMethod = SpeculativeMethod.NONE
    speculative_depth: int = Field(default=0, ge=0, description="Draft tokens per step (k).")
    step_times: tuple[StepTimePoint, ...] = Field(
        default=...,
        min_length=1,
        description="Decode step time by concurrency, sorted by concurrency.",
    )
    prefill_tokens_per_s: float = Field(..., gt=0, description="Prompt processing rate.")
    accepted_tokens_per_step: float = Field(
        default=1.0,
        ge=1.0,
        description="Mean tokens gained per sequence per step (1.0: no speculation).",
    )
    max_concurrency: int = Field(..., ge=1, description="Slots / max concurrent sequences.")
    prefix_cache_shared: bool = Field(
        default=True,
        description="Concurrent branches of one prompt prefill it once (prefix cache).",
    )
    observations: int = Field(default=0, ge=0, description="Live observations folded in so far.")

    @field_validator("step_times")
    @classmethod
    def _sorted_unique(cls, points: tuple[StepTimePoint, ...]) -> tuple[StepTimePoint, ...]:
        concurrencies = [p.concurrency for p in points]
        if len(set(concurrencies)) != len(concurrencies):
            raise ValueError(f"duplicate concurrencies in step_times: {concurrencies}")
        return tuple(sorted(points, key=lambda p: p.concurrency))

    @model_validator(mode="after")
    def _speculation_consistent(self) -> PoolProfile:
        if self.speculative_method is SpeculativeMethod.NONE:
            if self.speculative_depth:
                raise ValueError("speculative_depth needs a speculative method")
            if self.accepted_tokens_per_step != 1.0:
                raise ValueError("accepted_tokens_per_step is 1.0 without speculation")
        elif self.accepted_tokens_per_step > self.speculative_depth + 1:
            raise ValueError("accepted_tokens_per_step cannot exceed speculative_depth + 1")
        return self

    @property
    def speculates(self) -> bool:
        return self.speculative_method is not SpeculativeMethod.NONE

    @cached_property
    def _curve(self) -> tuple[np.ndarray, np.ndarray, float]:
        xs = np.array([p.concurrency for p in self.step_times], dtype=float)
        ys = np.array([p.step_time_s for p in self.step_times])
        slope = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])) if xs.size > 1 else 0.0
        return xs, ys, float(slope)

    def step_times_s(self, concurrencies: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`step_time_s`."""
        xs, ys, slope = self._curve
        c = np.asarray(concurrencies, dtype=float)
        out = np.interp(c, xs, ys)  # clamps to the first value below the first point
        beyond = c > xs[-1]
        if beyond.any():
            out[beyond] = ys[-1] + slope * (c[beyond] - xs[-1])
        return np.asarray(out, dtype=float)

    def step_time_s(self, concurrency: float) -> float:
        """Decode step time at ``concurrency`` (interpolated / extrapolated, see module doc)."""
        return float(self.step_times_s(np.array([concurrency]))[0])

    def decode_tokens_per_s(self, concurrency: float) -> float:
        """Tokens per second of ONE sequence while ``concurrency`` sequences decode."""
        return self.accepted_tokens_per_step / self.step_time_s(concurrency)

    def prefill_time_s(self, prompt_tokens: int) -> float:
        return prompt_tokens / self.prefill_tokens_per_s

    def speedup_over(self, baseline: PoolProfile, concurrency: float) -> float:
        """Per-sequence decode speed relative to ``baseline`` (>1: this pool is faster)."""
        return self.decode_tokens_per_s(concurrency) / baseline.decode_tokens_per_s(concurrency)

    def observe(
        self,
        *,
        concurrency: int,
        step_time_s: float | None = None,
        accepted_tokens_per_step: float | None = None,
        alpha: float = 0.2,
    ) -> PoolProfile:
        """Fold one live observation in with an exponential moving average of weight ``alpha``.

        A step time at a concurrency that was never measured adds a point there, starting from
        the curve's current prediction. Acceptance is ignored for pools that do not speculate.
        """
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        update: dict[str, object] = {"observations": self.observations + 1}
        if step_time_s is not None:
            if step_time_s <= 0:
                raise ValueError(f"step_time_s must be > 0, got {step_time_s}")
            old = self.step_time_s(concurrency)
            new_point = StepTimePoint(
                concurrency=concurrency, step_time_s=(1 - alpha) * old + alpha * step_time_s
            )
            kept = [p for p in self.step_times if p.concurrency != concurrency]
            update["step_times"] = (*kept, new_point)
        if accepted_tokens_per_step is not None and self.speculates:
            upper = float(self.speculative_depth + 1)
            observed = min(max(accepted_tokens_per_step, 1.0), upper)
            update["accepted_tokens_per_step"] = (
                1 - alpha
            ) * self.accepted_tokens_per_step + alpha * observed
        return self.model_validate({**self.model_dump(), **update})


class ProfileSet(BaseModel):
    """The profiles of every pool, keyed by pool name; serialised as one JSON document."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profiles: tuple[PoolProfile, ...] = ()

    @field_validator("profiles")
    @classmethod
    def _unique_pools(cls, profiles: tuple[PoolProfile, ...]) -> tuple[PoolProfile, ...]:
        names = [p.pool for p in profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"pool names must be unique: {names}")
        return profiles

    @property
    def pools(self) -> list[str]:
        return [p.pool for p in self.profiles]

    def get(self, pool: str) -> PoolProfile:
        """The profile of ``pool``; KeyError listing the known pools on a miss."""
        for p in self.profiles:
            if p.pool == pool:
                return p
        raise KeyError(f"no profile for pool {pool!r}; known: {self.pools}")

    def __contains__(self, pool: object) -> bool:
        return any(p.pool == pool for p in self.profiles)

    def with_profile(self, profile: PoolProfile) -> ProfileSet:
        """A copy where ``profile`` replaces the one of the same pool (or is added)."""
        kept = [p for p in self.profiles if p.pool != profile.pool]
        return ProfileSet(profiles=(*kept, profile))

    def for_model(self, model: str) -> ProfileSet:
        return ProfileSet(profiles=tuple(p for p in self.profiles if p.model == model))

    @classmethod
    def of(cls, profiles: Iterable[PoolProfile]) -> ProfileSet:
        return cls(profiles=tuple(profiles))

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> ProfileSet:
        return cls.model_validate_json(text)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ProfileSet:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
