"""Accuracy, vote and coverage metrics with 95% intervals; latency and token statistics.

Pure: standard library, numpy and pydantic only. Inputs are :class:`ProblemOutcome` rows (one per
problem, samples in the order they were requested); grading and answer clustering happen upstream.

Definitions
-----------
* avg@n: mean over problems of the fraction of correct samples.
* maj@k: a problem counts as solved when the most frequent answer cluster among its first k samples
  is correct. Samples without an answer do not vote; ties go to the cluster seen first.
* pass@k: the unbiased estimator of Chen et al. (2021), ``1 - C(n-c, k) / C(n, k)`` per problem.
* Intervals: Wilson score for a proportion (one binary value per problem); otherwise a seeded
  percentile bootstrap over problems.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Estimate",
    "MetricsReport",
    "PairedComparison",
    "ProblemOutcome",
    "bootstrap_interval",
    "compare_runs",
    "default_k_values",
    "majority_correct",
    "pass_at_k",
    "summarize",
    "wilson_interval",
]

Z_95 = 1.959963984540054
DEFAULT_RESAMPLES = 2000


class ProblemOutcome(BaseModel):
    """Graded samples of one problem. All per-sample tuples have the same length."""

    model_config = ConfigDict(frozen=True)

    problem_id: str
    level: int | None = None
    subject: str | None = None
    correct: tuple[bool, ...] = Field(description="Verdict per sample (errors count as wrong).")
    clusters: tuple[int | None, ...] = Field(
        description="Answer-equivalence cluster per sample; None when no answer was extracted."
    )
    latency_s: tuple[float | None, ...] = ()
    ttft_s: tuple[float | None, ...] = ()
    thinking_tokens: tuple[int | None, ...] = ()
    answer_tokens: tuple[int | None, ...] = ()
    errors: int = Field(default=0, ge=0, description="Samples that failed (counted as wrong).")

    @model_validator(mode="after")
    def _check_lengths(self) -> ProblemOutcome:
        n = len(self.correct)
        if n == 0:
            raise ValueError("an outcome needs at least one sample")
        optional = (self.latency_s, self.ttft_s, self.thinking_tokens, self.answer_tokens)
        if len(self.clusters) != n or any(len(t) not in (0, n) for t in optional):
            raise ValueError(f"{self.problem_id}: per-sample fields differ in length")
        return self

    @property
    def n(self) -> int:
        return len(self.correct)


class Estimate(BaseModel):
    """A point estimate with its 95% interval."""

    value: float
    low: float
    high: float
    method: Literal["wilson", "bootstrap", "exact"]
    count: int = Field(description="Number of problems behind the estimate.")


class MetricsReport(BaseModel):
    n_problems: int
    n_samples: int
    errors: int
    avg: Estimate = Field(description="avg@n over the samples each problem has.")
    maj_at: dict[int, Estimate] = Field(description="maj@k by k.")
    pass_at: dict[int, Estimate] = Field(description="pass@k by k.")
    by_level: dict[str, Estimate]
    by_subject: dict[str, Estimate]
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    mean_thinking_tokens: float | None
    mean_answer_tokens: float | None
    mean_total_tokens: float | None


class PairedComparison(BaseModel):
    """Run A minus run B on the problems both runs contain."""

    n_problems: int
    mean_a: float
    mean_b: float
    difference: Estimate
    a_better: int = Field(description="Problems where A's score is higher.")
    b_better: int
    ties: int
    mcnemar_p: float | None = Field(
        description="Exact two-sided McNemar p-value when every score is 0 or 1, else None."
    )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for n samples of which c are correct (Chen et al., 2021)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # C(n-c, k) / C(n, k) as a product, which stays exact in floating point for large n.
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def wilson_interval(successes: int, total: int, *, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    if total <= 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total and total > 0, got {successes}/{total}")
    p = successes / total
    z2 = z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / (1 + z2 / total)
    # Clamp so the interval always contains p: at p = 0 or 1 rounding can leave it a hair off.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    *,
    seed: int,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling the values with replacement."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap needs at least one value")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, data.size, size=(n_resamples, data.size))
    means = data[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def majority_correct(correct: Sequence[bool], clusters: Sequence[Hashable | None], k: int) -> bool:
    """Whether the most frequent answer cluster among the first k samples is a correct one."""
    votes: Counter[Hashable] = Counter(c for c in clusters[:k] if c is not None)
    if not votes:
        return False
    winner = votes.most_common(1)[0][0]  # Counter keeps first-seen order among ties
    return any(ok for ok, c in zip(correct[:k], clusters[:k], strict=True) if c == winner)


def _estimate(values: Sequence[float], *, seed: int, n_resamples: int) -> Estimate:
    data = np.asarray(values, dtype=float)
    value = float(data.mean())
    if np.all((data == 0.0) | (data == 1.0)):
        low, high = wilson_interval(int(data.sum()), data.size)
        return Estimate(value=value, low=low, high=high, method="wilson", count=data.size)
    low, high = bootstrap_interval(data, seed=seed, n_resamples=n_resamples)
    return Estimate(value=value, low=low, high=high, method="bootstrap", count=data.size)


def _percentile(values: Sequence[float | int | None], q: float) -> float | None:
    data = [v for v in values if v is not None]
    return float(np.percentile(data, q)) if data else None


def _mean(values: Sequence[float | int | None]) -> float | None:
    data = [v for v in values if v is not None]
    return float(np.mean(data)) if data else None


def default_k_values(n: int) -> tuple[int, ...]:
    """Powers of two up to n, plus n itself."""
    ks = {1 << i for i in range(n.bit_length()) if 1 << i <= n}
    ks.add(n)
    return tuple(sorted(ks))


def _grouped(
    outcomes: Sequence[ProblemOutcome],
    key: Callable[[ProblemOutcome], str | None],
    *,
    seed: int,
    n_resamples: int,
) -> dict[str, Estimate]:
    groups: dict[str, list[float]] = defaultdict(list)
    for o in outcomes:
        label = key(o)
        if label is not None:
            groups[label].append(sum(o.correct) / o.n)
    return {
        label: _estimate(scores, seed=seed, n_resamples=n_resamples)
        for label, scores in sorted(groups.items())
    }


def summarize(
    outcomes: Sequence[ProblemOutcome],
    *,
    k_values: Sequence[int] | None = None,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> MetricsReport:
    """All metrics of one run. k values default to powers of two up to the smallest n."""
    if not outcomes:
        raise ValueError("no outcomes to summarize")
    min_n = min(o.n for o in outcomes)
    ks = tuple(k_values) if k_values is not None else default_k_values(min_n)
    maj: dict[int, Estimate] = {}
    pass_: dict[int, Estimate] = {}
    for k in ks:
        eligible = [o for o in outcomes if o.n >= k]
        if not eligible:
            continue
        maj[k] = _estimate(
            [float(majority_correct(o.correct, o.clusters, k)) for o in eligible],
            seed=seed,
            n_resamples=n_resamples,
        )
        pass_[k] = _estimate(
            [pass_at_k(o.n, sum(o.correct), k) for o in eligible],
            seed=seed,
            n_resamples=n_resamples,
        )
    thinking = [t for o in outcomes for t in o.thinking_tokens]
    answer = [t for o in outcomes for t in o.answer_tokens]
    total = [
        a + b
        for o in outcomes
        for a, b in zip(o.thinking_tokens, o.answer_tokens, strict=True)
        if a is not None and b is not None
    ]
    latency = [t for o in outcomes for t in o.latency_s]
    ttft = [t for o in outcomes for t in o.ttft_s]
    return MetricsReport(
        n_problems=len(outcomes),
        n_samples=sum(o.n for o in outcomes),
        errors=sum(o.errors for o in outcomes),
        avg=_estimate([sum(o.correct) / o.n for o in outcomes], seed=seed, n_resamples=n_resamples),
        maj_at=maj,
        pass_at=pass_,
        by_level=_grouped(
            outcomes,
            lambda o: None if o.level is None else f"Level {o.level}",
            seed=seed,
            n_resamples=n_resamples,
        ),
        by_subject=_grouped(outcomes, lambda o: o.subject, seed=seed, n_resamples=n_resamples),
        latency_p50_s=_percentile(latency, 50),
        latency_p95_s=_percentile(latency, 95),
        ttft_p50_s=_percentile(ttft, 50),
        ttft_p95_s=_percentile(ttft, 95),
        mean_thinking_tokens=_mean(thinking),
        mean_answer_tokens=_mean(answer),
        mean_total_tokens=_mean(total),
    )


def _mcnemar_exact(a_better: int, b_better: int) -> float:
    discordant = a_better + b_better
    if discordant == 0:
        return 1.0
    smaller = min(a_better, b_better)
    tail = sum(math.comb(discordant, i) for i in range(smaller + 1)) / 2.0**discordant
    return min(1.0, 2.0 * tail)


def compare_runs(
    run_a: Sequence[ProblemOutcome],
    run_b: Sequence[ProblemOutcome],
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> PairedComparison:
    """Paired difference of per-problem accuracy (A - B) over the problems both runs share."""
    scores_b = {o.problem_id: sum(o.correct) / o.n for o in run_b}
    pairs = [
        (sum(o.correct) / o.n, scores_b[o.problem_id]) for o in run_a if o.problem_id in scores_b
    ]
    if not pairs:
        raise ValueError("the two runs share no problems")
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    diff = a - b
    low, high = bootstrap_interval(diff, seed=seed, n_resamples=n_resamples)
    a_better = int((diff > 0).sum())
    b_better = int((diff < 0).sum())
    binary = bool(np.all(np.isin(a, (0.0, 1.0))) and np.all(np.isin(b, (0.0, 1.0))))
    return PairedComparison(
        n_problems=len(pairs),
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        difference=Estimate(
            value=float(diff.mean()), low=low, high=high, method="bootstrap", count=len(pairs)
        ),
        a_better=a_better,
        b_better=b_better,
        ties=len(pairs) - a_better - b_better,
        mcnemar_p=_mcnemar_exact(a_better, b_better) if binary else None,
    )
