"""Accuracy model: predicted Acc(N, mode, thinking budget) per dataset and difficulty.

From eval logs (:class:`AccuracyModel.fit`): every problem contributes its recorded branches —
(answer, correct, length) with answers already canonicalised by the equivalence checker, so equal
strings mean equivalent answers. For each N and budget, N branches are drawn with replacement
(bootstrap, ``n_bootstrap`` rounds, seeded per problem so the result is deterministic and one
problem's draws do not depend on the others); a branch longer than the budget never finished and
casts no vote; the majority answer wins, a tie between answers gives the average correctness of
the tied answers, no finished branch scores 0. The mean over problems is maj@N at that budget.
Samples without a recorded length are assumed to fit in every budget.

Without logs (:class:`DefaultAccuracyCurve`), a saturating curve::

    acc(N, b) = f(b) · (a_inf - (a_inf - a_1) · N^(-alpha)),   f(b) = 1 - exp(-b / b_scale)

(``f = 1`` without a budget). Its default numbers are PLACEHOLDERS chosen to look like published
curves, not measurements of any model served here: majority voting over sampled chains of thought
rises quickly and saturates within tens of samples (self-consistency, Wang et al. 2023,
arXiv:2203.11171: PaLM-540B on GSM8K 56.5% greedy → 74.4% with 40 paths), and the seed paper
(arXiv:2505.19634) reports 72.4% on MATH-500 for a 3B model within 10 s. Replace them by fitting
real eval logs.
"""

from __future__ import annotations

import abc
import math
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.modes import ThinkingMode


class BranchSample(BaseModel):
    """One recorded branch of one problem."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer: str | None = Field(..., description="Canonical answer key; None: no answer found.")
    correct: bool
    length: int | None = Field(
        default=None, ge=0, description="Generated tokens (thinking + answer)."
    )


class ProblemSamples(BaseModel):
    """All recorded branches of one problem under one mode."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    problem_id: str
    dataset: str = "default"
    difficulty: str | None = Field(default=None, description="e.g. 'level-3'; None when unknown.")
    mode: ThinkingMode = ThinkingMode.SLOW
    samples: tuple[BranchSample, ...] = Field(..., min_length=1)


class AccuracyEstimator(abc.ABC):
    """Anything that predicts accuracy of majority voting over N branches."""

    @abc.abstractmethod
    def accuracy(
        self,
        n_branches: int,
        *,
        mode: ThinkingMode = ThinkingMode.SLOW,
        thinking_budget: int | None = None,
        dataset: str | None = None,
        difficulty: str | None = None,
    ) -> float:
        """Predicted probability that the voted answer is correct."""


class SaturatingCurve(BaseModel):
    """``f(b) · (a_inf - (a_inf - a_1) · N^-alpha)`` with ``f(b) = 1 - exp(-b / budget_scale)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    a_1: float = Field(..., ge=0.0, le=1.0, description="Accuracy of one branch.")
    a_inf: float = Field(..., ge=0.0, le=1.0, description="Limit of majority voting.")
    alpha: float = Field(..., gt=0.0, description="How fast voting saturates.")
    budget_scale_tokens: float | None = Field(
        default=None,
        gt=0.0,
        description="Budget at which 63% of the budget-free accuracy is reached.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SaturatingCurve:
        if self.a_inf < self.a_1:
            raise ValueError("a_inf must be >= a_1")
        return self

    def value(self, n_branches: float, thinking_budget: int | None) -> float:
        acc = self.a_inf - (self.a_inf - self.a_1) * n_branches ** (-self.alpha)
        if thinking_budget is not None and self.budget_scale_tokens is not None:
            acc *= 1.0 - math.exp(-thinking_budget / self.budget_scale_tokens)
        return float(acc)


def _placeholder_curves() -> dict[ThinkingMode, SaturatingCurve]:
    return {
        ThinkingMode.SLOW: SaturatingCurve(
            a_1=0.60, a_inf=0.72, alpha=0.6, budget_scale_tokens=1500
        ),
        ThinkingMode.FAST: SaturatingCurve(a_1=0.45, a_inf=0.52, alpha=0.6),
    }


class DefaultAccuracyCurve(BaseModel, AccuracyEstimator):
    """The documented placeholder used when no eval logs exist (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    curves: dict[ThinkingMode, SaturatingCurve] = Field(default_factory=_placeholder_curves)

    def accuracy(
        self,
        n_branches: int,
        *,
        mode: ThinkingMode = ThinkingMode.SLOW,
        thinking_budget: int | None = None,
        dataset: str | None = None,
        difficulty: str | None = None,
    ) -> float:
        if n_branches < 1:
            raise ValueError(f"n_branches must be >= 1, got {n_branches}")
        curve = self.curves.get(mode) or self.curves[ThinkingMode.SLOW]
        return curve.value(n_branches, thinking_budget)


class CurvePoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n_branches: int = Field(..., ge=1)
    thinking_budget: int | None
    accuracy: float = Field(..., ge=0.0, le=1.0)


class AccuracyCurve(BaseModel):
    """maj@N by budget for one (dataset, difficulty, mode); None in a key means 'all'."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str | None
    difficulty: str | None
    mode: ThinkingMode
    problems: int = Field(..., ge=1)
    unlimited_from: int | None = Field(
        default=None, description="Longest recorded branch: budgets from here on truncate nothing."
    )
    points: tuple[CurvePoint, ...] = Field(..., min_length=1)

    def _by_n(self, thinking_budget: int | None, n: int) -> float:
        pts = sorted(
            (p for p in self.points if p.thinking_budget == thinking_budget),
            key=lambda p: p.n_branches,
        )
        ns = [math.log2(p.n_branches) for p in pts]
        accs = [p.accuracy for p in pts]
        return float(np.interp(math.log2(n), ns, accs))

    def value(self, n_branches: int, thinking_budget: int | None) -> float:
        """Interpolated: log2-linear in N (clamped), linear in budget (from 0 at budget 0).

        A curve fitted without budget columns ignores ``thinking_budget``: fit with the budgets
        you will query (and recorded lengths) to model truncation.
        """
        budgets = sorted({p.thinking_budget for p in self.points if p.thinking_budget is not None})
        has_unlimited = any(p.thinking_budget is None for p in self.points)
        xs: list[float] = [0.0]
        ys: list[float] = [0.0]
        for b in budgets:
            xs.append(float(b))
            ys.append(self._by_n(b, n_branches))
        if has_unlimited:
            top = self._by_n(None, n_branches)
            if thinking_budget is None or not budgets:
                return top
            end = float(self.unlimited_from or budgets[-1])
            if end > xs[-1]:
                xs.append(end)
                ys.append(top)
        elif thinking_budget is None:
            return ys[-1]
        return float(np.interp(float(thinking_budget), xs, ys))


def _majority_credit(
    draws: np.ndarray, cluster_of: np.ndarray, cluster_correct: np.ndarray
) -> float:
    """Mean voted correctness over bootstrap rows; cluster -1 marks an unfinished branch."""
    ids = cluster_of[draws]  # rounds x N
    n_clusters = cluster_correct.size
    if n_clusters == 0:
        return 0.0
    rounds = ids.shape[0]
    flat = (ids + np.arange(rounds)[:, None] * n_clusters).ravel()
    keep = ids.ravel() >= 0
    counts = np.bincount(flat[keep], minlength=rounds * n_clusters).reshape(rounds, n_clusters)
    top = counts.max(axis=1, keepdims=True)
    winners = (counts == top) & (top > 0)
    n_winners = winners.sum(axis=1)
    credit = (winners * cluster_correct[None, :]).sum(axis=1)
    return float(np.where(n_winners > 0, credit / np.maximum(n_winners, 1), 0.0).mean())


def _problem_accuracies(
    problem: ProblemSamples,
    *,
    n_values: Sequence[int],
    budgets: Sequence[int | None],
    n_bootstrap: int,
    seed: int,
) -> dict[tuple[int, int | None], float]:
    answers = [s.answer for s in problem.samples]
    keys = sorted({a for a in answers if a is not None})
    index = {a: i for i, a in enumerate(keys)}
    correct = np.zeros(len(keys))
    counts = np.zeros(len(keys))
    for s in problem.samples:
        if s.answer is not None:
            correct[index[s.answer]] += s.correct
            counts[index[s.answer]] += 1
    cluster_correct = correct / np.maximum(counts, 1)
    base = np.array([index[a] if a is not None else -1 for a in answers])
    lengths = np.array([-1 if s.length is None else s.length for s in problem.samples])
    rng = np.random.default_rng([seed, zlib.crc32(problem.problem_id.encode())])
    out: dict[tuple[int, int | None], float] = {}
    for n in n_values:
        draws = rng.integers(0, len(answers), size=(n_bootstrap, n))
        for b in budgets:
            cluster_of = base if b is None else np.where(lengths > b, -1, base)
            out[(n, b)] = _majority_credit(draws, cluster_of, cluster_correct)
    return out


class AccuracyModel(BaseModel, AccuracyEstimator):
    """Accuracy curves bootstrapped from eval logs, with the default curve as the fallback.

    Lookup order: (dataset, difficulty) → (dataset, all difficulties) → (all datasets,
    difficulty) → (all datasets, all difficulties), all in the requested mode → ``fallback``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    curves: tuple[AccuracyCurve, ...] = ()
    fallback: DefaultAccuracyCurve = Field(default_factory=DefaultAccuracyCurve)
    n_bootstrap: int = 0
    seed: int = 0

    @classmethod
    def fit(
        cls,
        records: Sequence[ProblemSamples],
        *,
        n_values: Sequence[int] = (1, 2, 4, 8, 16),
        budgets: Sequence[int | None] = (None,),
        n_bootstrap: int = 256,
        seed: int = 0,
        fallback: DefaultAccuracyCurve | None = None,
    ) -> AccuracyModel:
        """Bootstrap maj@N curves per (dataset, difficulty, mode) and their pooled groups."""
        if not records or n_bootstrap < 1 or not n_values or min(n_values) < 1:
            raise ValueError("need records, n_bootstrap >= 1 and n_values >= 1")
        grid_budgets = tuple(dict.fromkeys((*budgets, None)))
        # Seeded per problem, so a problem scores the same in every group it belongs to.
        scores = [
            _problem_accuracies(
                r, n_values=n_values, budgets=grid_budgets, n_bootstrap=n_bootstrap, seed=seed
            )
            for r in records
        ]
        groups: dict[tuple[str | None, str | None, ThinkingMode], list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            keys = (
                (r.dataset, r.difficulty, r.mode),
                (r.dataset, None, r.mode),
                (None, r.difficulty, r.mode),
                (None, None, r.mode),
            )
            for key in dict.fromkeys(keys):  # a record without difficulty joins its group once
                groups[key].append(i)
        curves = []
        for (dataset, difficulty, mode), members in sorted(
            groups.items(), key=lambda kv: tuple(str(k) for k in kv[0])
        ):
            per_problem = [scores[i] for i in members]
            points = tuple(
                CurvePoint(
                    n_branches=n,
                    thinking_budget=b,
                    accuracy=float(np.mean([p[(n, b)] for p in per_problem])),
                )
                for n in n_values
                for b in grid_budgets
            )
            lengths = [
                s.length for i in members for s in records[i].samples if s.length is not None
            ]
            curves.append(
                AccuracyCurve(
                    dataset=dataset,
                    difficulty=difficulty,
                    mode=mode,
                    problems=len(members),
                    unlimited_from=max(lengths) if lengths else None,
                    points=points,
                )
            )
        return cls(
            curves=tuple(curves),
            fallback=fallback or DefaultAccuracyCurve(),
            n_bootstrap=n_bootstrap,
            seed=seed,
        )

    def curve_for(
        self, *, mode: ThinkingMode, dataset: str | None, difficulty: str | None
    ) -> AccuracyCurve | None:
        by_key = {(c.dataset, c.difficulty, c.mode): c for c in self.curves}
        for key in (
            (dataset, difficulty, mode),
            (dataset, None, mode),
            (None, difficulty, mode),
            (None, None, mode),
        ):
            if key in by_key:
                return by_key[key]
        return None

    def accuracy(
        self,
        n_branches: int,
        *,
        mode: ThinkingMode = ThinkingMode.SLOW,
        thinking_budget: int | None = None,
        dataset: str | None = None,
        difficulty: str | None = None,
    ) -> float:
        if n_branches < 1:
            raise ValueError(f"n_branches must be >= 1, got {n_branches}")
        curve = self.curve_for(mode=mode, dataset=dataset, difficulty=difficulty)
        if curve is None:
            return self.fallback.accuracy(n_branches, mode=mode, thinking_budget=thinking_budget)
        return curve.value(n_branches, thinking_budget)
