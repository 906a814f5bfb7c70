"""Latency model: predicted wall time of one request with N branches on one pool.

Notation: pool profile ``p`` (see :mod:`policies.profile`), ``N`` branches, ``L`` the current
load (sequences already decoding on the worker), ``a`` = ``p.accepted_tokens_per_step``,
``s(B)`` = ``p.step_time_s(B)``, ``X`` the generated length of one branch in tokens.

1. Branch length. ``X = min(t · Y, C)`` where ``Y`` follows the branch-length distribution
   (empirical samples or a lognormal), ``t`` ∈ (0, 1] is the trimming factor (TrimR shortens
   overthinking) and ``C = thinking_budget + answer_tokens_after_cut`` (capped by ``max_tokens``)
   — a branch whose thinking is cut at the budget still writes a short answer.
2. Order statistics. ``E_j`` = E[j-th shortest of N independent draws of X], computed exactly
   on the distribution's quantile table (weights ``P(Binomial(N, u) >= j)`` differenced over the
   quantile cells); deterministic, no sampling.
3. Decode. Branches run concurrently; while ``N - j + 1`` of them are still running the worker
   decodes ``L + N - j + 1`` sequences, each gaining ``a`` tokens per step of ``s(L + N - j + 1)``
   seconds. The request ends when ``k = ceil(f · N)`` branches have finished (``f`` = early
   consensus fraction; 1 waits for all, the slowest branch finishes last)::

       decode = sum_{j=1..k} (E_j - E_{j-1}) · s(L + N - j + 1) / a,      E_0 = 0

   When ``L + N`` exceeds the worker's slots, branches run in waves of the free slots
   ``F = max(slots - L, 1)``: ``floor(N / F)`` full waves plus one partial wave, each priced as
   above (a slightly pessimistic stand-in for continuous slot refill).
4. Prefill. ``prompt_tokens / p.prefill_tokens_per_s``, once when concurrent branches share the
   prefix cache (``p.prefix_cache_shared``), else once per branch.
5. Total = prefill + decode + ``overhead_s`` (orchestration, voting).

Known simplifications: step time does not grow with context length within a request, and the
pool load ``L`` is held constant for the request's duration.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from policies.profile import PoolProfile

_FloatArray = np.ndarray


def _order_statistic_weights(edges: _FloatArray, n: int) -> _FloatArray:
    """Matrix W (n x cells): W[j-1, i] = P(j-th smallest of n uniforms lies in cell i)."""
    u = np.clip(edges, 0.0, 1.0)
    t = np.arange(n + 1)
    log_comb = np.array(
        [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) for k in t]
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        log_u = np.log(u)[:, None]
        log_1mu = np.log1p(-u)[:, None]
        log_pmf = log_comb[None, :] + t[None, :] * log_u + (n - t)[None, :] * log_1mu
        # 0 * log(0) is 0 here: the endpoints put all their mass on t = 0 or t = n.
        log_pmf = np.where((t[None, :] == 0) & (u[:, None] == 0.0), 0.0, log_pmf)
        log_pmf = np.where((t[None, :] == n) & (u[:, None] == 1.0), 0.0, log_pmf)
    pmf = np.nan_to_num(np.exp(log_pmf), nan=0.0)
    # tail[:, j] = P(Binomial(n, u) >= j) = P(j-th order statistic <= u)
    tail = np.cumsum(pmf[:, ::-1], axis=1)[:, ::-1]
    cdf = tail[:, 1:]  # columns j = 1..n
    return np.diff(cdf, axis=0).T


class BranchLengthModel(BaseModel, abc.ABC):
    """Distribution of one branch's generated tokens when nothing cuts it short."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    _weights: dict[int, _FloatArray] = PrivateAttr(default_factory=dict)
    _results: dict[tuple[int, float | None, float], _FloatArray] = PrivateAttr(default_factory=dict)
    _table: tuple[_FloatArray, _FloatArray] | None = PrivateAttr(default=None)

    @abc.abstractmethod
    def _build_quantile_table(self) -> tuple[_FloatArray, _FloatArray]:
        """(edges, values): cell i spans quantiles [edges[i], edges[i+1]] and holds values[i]."""

    def _quantile_table(self) -> tuple[_FloatArray, _FloatArray]:
        if self._table is None:
            self._table = self._build_quantile_table()
        return self._table

    def expected_order_statistics(
        self, n: int, *, cap: float | None = None, scale: float = 1.0
    ) -> _FloatArray:
        """E[j-th shortest of ``n`` draws of ``min(scale · Y, cap)``] for j = 1..n."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        key = (n, cap, scale)
        cached = self._results.get(key)
        if cached is None:
            edges, values = self._quantile_table()
            if n not in self._weights:
                self._weights[n] = _order_statistic_weights(edges, n)
            lengths = values * scale
            if cap is not None:
                lengths = np.minimum(lengths, cap)
            cached = self._weights[n] @ lengths
            cached.setflags(write=False)
            self._results[key] = cached
        return cached

    def expected_max(self, n: int, *, cap: float | None = None, scale: float = 1.0) -> float:
        return float(self.expected_order_statistics(n, cap=cap, scale=scale)[-1])

    def expected_mean(self, *, cap: float | None = None, scale: float = 1.0) -> float:
        return float(self.expected_order_statistics(1, cap=cap, scale=scale)[0])


class EmpiricalBranchLengths(BranchLengthModel):
    """Recorded branch lengths; order statistics are those of resampling them with replacement."""

    kind: Literal["empirical"] = "empirical"
    samples: tuple[int, ...] = Field(..., min_length=1, description="Branch lengths in tokens.")

    @field_validator("samples")
    @classmethod
    def _positive_sorted(cls, samples: tuple[int, ...]) -> tuple[int, ...]:
        if min(samples) < 0:
            raise ValueError("branch lengths must be >= 0")
        return tuple(sorted(samples))

    def _build_quantile_table(self) -> tuple[_FloatArray, _FloatArray]:
        m = len(self.samples)
        return np.linspace(0.0, 1.0, m + 1), np.asarray(self.samples, dtype=float)


def _lognormal_quantile_edges() -> _FloatArray:
    # Uniform cells in the body, geometrically finer towards u = 1 where the max of many draws
    # lives; the last cell is 1e-7 wide.
    body = np.linspace(0.0, 0.99, 991)
    tail = 1.0 - np.geomspace(1e-2, 1e-7, 241)[1:]
    return np.concatenate([body, tail, [1.0]])


class LognormalBranchLengths(BranchLengthModel):
    """Branch length ~ exp(Normal(mu, sigma)), in tokens."""

    kind: Literal["lognormal"] = "lognormal"
    mu: float = Field(..., description="Mean of log(length).")
    sigma: float = Field(..., gt=0, description="Standard deviation of log(length).")

    @classmethod
    def fit(cls, samples: Sequence[float]) -> LognormalBranchLengths:
        """Maximum-likelihood fit to positive lengths (at least two distinct values)."""
        logs = np.log(np.asarray([s for s in samples if s > 0], dtype=float))
        if logs.size < 2 or float(np.std(logs)) == 0.0:
            raise ValueError("need at least two distinct positive lengths to fit a lognormal")
        return cls(mu=float(np.mean(logs)), sigma=float(np.std(logs)))

    @classmethod
    def from_median(cls, median_tokens: float, *, sigma: float) -> LognormalBranchLengths:
        return cls(mu=math.log(median_tokens), sigma=sigma)

    def _build_quantile_table(self) -> tuple[_FloatArray, _FloatArray]:
        edges = _lognormal_quantile_edges()
        normal = NormalDist(self.mu, self.sigma)
        mids = (edges[:-1] + edges[1:]) / 2
        values = np.exp(np.array([normal.inv_cdf(float(u)) for u in mids]))
        return edges, values


BranchLengths = Annotated[
    EmpiricalBranchLengths | LognormalBranchLengths, Field(discriminator="kind")
]


def _waves(n: int, free: int) -> list[int]:
    """Rounds of at most ``free`` concurrent branches that run ``n`` branches."""
    full, rest = divmod(n, free)
    return [free] * full + ([rest] if rest else [])


class LatencyEstimate(BaseModel):
    """One prediction with its parts (seconds and tokens)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: str
    n_branches: int
    thinking_budget: int | None
    prefill_s: float
    decode_s: float
    overhead_s: float
    total_s: float
    waves: int = Field(..., description="Rounds of branches when slots run out (1: all at once).")
    step_time_s: float = Field(..., description="Step time with every branch running.")
    tokens_per_step: float
    slowest_branch_tokens: float = Field(..., description="Expected tokens of the last finisher.")
    expected_generated_tokens: float = Field(..., description="Summed over branches.")


class LatencyModel(BaseModel):
    """Predicts a request's wall time from a pool profile (formula in the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lengths: BranchLengths
    answer_tokens_after_cut: int = Field(
        default=64, ge=0, description="Tokens written after thinking is cut at the budget."
    )
    finish_fraction: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Early consensus: done when this share has finished.",
    )
    trim_factor: float = Field(
        default=1.0, gt=0.0, le=1.0, description="Trimming shortens each branch to this fraction."
    )
    overhead_s: float = Field(default=0.0, ge=0.0, description="Fixed per-request cost.")

    def branch_cap(self, thinking_budget: int | None, max_tokens: int | None) -> float | None:
        """Longest a branch can get: the budget plus the answer after the cut, and max_tokens."""
        caps = []
        if thinking_budget is not None:
            caps.append(float(thinking_budget + self.answer_tokens_after_cut))
        if max_tokens is not None:
            caps.append(float(max_tokens))
        return min(caps) if caps else None

    def _wave(
        self, profile: PoolProfile, *, n: int, load: int, cap: float | None
    ) -> tuple[float, float, float]:
        """(decode seconds, slowest-branch tokens, generated tokens) of n concurrent branches."""
        expected = self.lengths.expected_order_statistics(n, cap=cap, scale=self.trim_factor)
        k = max(1, math.ceil(self.finish_fraction * n - 1e-9))
        finished = expected[:k]
        running = load + n - np.arange(k)  # while the j-th branch is the next to finish
        steps = profile.step_times_s(running)
        increments = finished.copy()
        increments[1:] -= finished[:-1]
        seconds = float(increments @ steps) / profile.accepted_tokens_per_step
        last = float(finished[-1])
        return seconds, last, float(finished.sum()) + (n - k) * last

    def predict(
        self,
        profile: PoolProfile,
        *,
        n_branches: int,
        prompt_tokens: int,
        thinking_budget: int | None = None,
        max_tokens: int | None = None,
        pool_load: int = 0,
        warmup_first: int | None = None,
    ) -> LatencyEstimate:
        """Predicted wall time of ``n_branches`` branches of one prompt on ``profile``'s pool.

        ``warmup_first``: that many branches run alone, and the rest start only once they have
        finished (a confidence early stop in DeepConf-online's order). The rest are priced as if
        none were pruned: an upper bound of the second phase."""
        if n_branches < 1:
            raise ValueError(f"n_branches must be >= 1, got {n_branches}")
        if prompt_tokens < 0 or pool_load < 0:
            raise ValueError("prompt_tokens and pool_load must be >= 0")
        if warmup_first is not None and warmup_first < 1:
            raise ValueError(f"warmup_first must be >= 1, got {warmup_first}")
        cap = self.branch_cap(thinking_budget, max_tokens)
        free = max(profile.max_concurrency - pool_load, 1)
        first = min(warmup_first or n_branches, n_branches)
        wave_sizes = _waves(first, free) + _waves(n_branches - first, free)
        decode_s = slowest = generated = 0.0
        for size in wave_sizes:
            seconds, last, tokens = self._wave(profile, n=size, load=pool_load, cap=cap)
            decode_s += seconds
            slowest = max(slowest, last)
            generated += tokens
        prefill_tokens = prompt_tokens * (1 if profile.prefix_cache_shared else n_branches)
        prefill_s = profile.prefill_time_s(prefill_tokens)
        return LatencyEstimate(
            pool=profile.pool,
            n_branches=n_branches,
            thinking_budget=thinking_budget,
            prefill_s=prefill_s,
            decode_s=decode_s,
            overhead_s=self.overhead_s,
            total_s=prefill_s + decode_s + self.overhead_s,
            waves=len(wave_sizes),
            step_time_s=profile.step_time_s(pool_load + wave_sizes[0]),
            tokens_per_step=profile.accepted_tokens_per_step,
            slowest_branch_tokens=slowest,
            expected_generated_tokens=generated,
        )
