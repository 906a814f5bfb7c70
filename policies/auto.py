"""``mode: auto`` over a ladder of modes: stage 1 from the problem, stage 3 from the answers.

The ladder runs from the cheapest mode (level 0, fast: no thinking) to the deepest thinker (the
last level, "always slow"). For one request:

1. **Stage 1** (:class:`policies.router.RouterModel`, prompt features): a problem whose
   P(needs slow) is at or above ``start_deepest_at`` goes straight to the deepest level;
   every other problem starts at level 0.
2. **Stage 3**, after each answer but the deepest's (:class:`AnswerCheck`): a logistic score of
   the answer's signals (:mod:`policies.answer_signals`, incl. agreement with the cheaper answers
   in a cascade) and of the stage-1 score — P(this answer is wrong). At or above the check's
   ``escalate_at`` the request moves one level up, else the answer is returned.

Every decision carries its reason. Fitting (:func:`fit_auto_policy`) learns the checks on
labelled examples and picks the thresholds that spend the fewest tokens while keeping accuracy
within ``max_accuracy_drop`` of always-deepest; pass it scores that were not fitted on the same
examples (out-of-fold) or the thresholds will be optimistic. Labels only train and grade: the
policy itself sees the problem and the answers, nothing else.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.answer_signals import ANSWER_SIGNAL_NAMES, signal_vector
from policies.features import FEATURE_NAMES, extract_features, feature_matrix
from policies.router import RouterModel, RouterThresholds, fit_logistic

STAGE1_INPUT = "stage1_score"
REFUTED = "claims_refuted"
ESCALATE_ON: tuple[str, ...] = (REFUTED,)
"""Signals that escalate by themselves (:attr:`AnswerCheck.escalate_on`'s default)."""


class LinearScore(BaseModel):
    """A standardised logistic score over named inputs; JSON round-trips."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    @model_validator(mode="after")
    def _shapes(self) -> LinearScore:
        if not len(self.mean) == len(self.scale) == len(self.weights) == len(self.names):
            raise ValueError("mean, scale and weights need one value per input")
        if self.scale and min(self.scale) <= 0:
            raise ValueError("scales must be > 0")
        return self

    def contributions(self, values: Mapping[str, float]) -> dict[str, float]:
        x = (signal_vector(values, self.names) - np.array(self.mean)) / np.array(self.scale)
        z = x * np.array(self.weights)
        return {n: float(v) for n, v in zip(self.names, z, strict=True)}

    def score(self, values: Mapping[str, float]) -> float:
        logit = self.bias + sum(self.contributions(values).values())
        return float(0.5 * (1.0 + np.tanh(0.5 * logit)))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, names: Sequence[str], *, l2: float) -> LinearScore:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale == 0] = 1.0
        weights, bias = fit_logistic((x - mean) / scale, y, l2=l2)
        return cls(
            names=tuple(names),
            mean=tuple(mean.tolist()),
            scale=tuple(scale.tolist()),
            weights=tuple(weights.tolist()),
            bias=bias,
        )


class StageDecision(BaseModel):
    """One step of auto: which level answers next (or whether to stop) and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: Literal["stage1", "stage3"]
    level: int = Field(description="The level that answers next, or the one kept.")
    stop: bool = Field(description="True: return the answer of `level`.")
    score: float
    reason: str


class AnswerCheck(BaseModel):
    """Stage 3 at one level: P(this answer is wrong) from its signals; escalate at or above."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    score: LinearScore
    escalate_at: float = Field(ge=0.0, le=1.0 + 1e-9)
    escalate_on: tuple[str, ...] = Field(
        ESCALATE_ON, description="Signals that escalate by themselves when > 0."
    )

    def vetoed_by(self, values: Mapping[str, float]) -> list[str]:
        return [name for name in self.escalate_on if values.get(name, 0.0) > 0]

    def decide(self, level: int, values: Mapping[str, float], *, top_k: int = 3) -> StageDecision:
        p = self.score.score(values)
        vetoes = self.vetoed_by(values)
        if vetoes:
            return StageDecision(
                stage="stage3",
                level=level + 1,
                stop=False,
                score=p,
                reason=f"stage 3 (level {level}): {', '.join(vetoes)} → escalate to level "
                f"{level + 1} whatever P(answer wrong)={p:.2f}",
            )
        ranked = sorted(self.score.contributions(values).items(), key=lambda kv: -abs(kv[1]))
        pushes = ", ".join(f"{name} {value:+.2f}" for name, value in ranked[:top_k])
        escalate = p >= self.escalate_at
        verdict = f"escalate to level {level + 1}" if escalate else "keep it"
        reason = (
            f"stage 3 (level {level}): P(answer wrong)={p:.2f} (escalate from "
            f"{self.escalate_at:.2f}) → {verdict}; top contributions: {pushes}"
        )
        return StageDecision(
            stage="stage3",
            level=level + 1 if escalate else level,
            stop=not escalate,
            score=p,
            reason=reason,
        )


class AutoPolicy(BaseModel):
    """Stage 1 + one :class:`AnswerCheck` per level below the deepest. JSON round-trips."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: tuple[str, ...] = Field(description="Mode names, cheapest first (fast, thinkers).")
    stage1: RouterModel
    start_deepest_at: float = Field(
        ge=0.0, le=1.0 + 1e-9, description="Stage-1 P(needs slow) that skips to the deepest."
    )
    checks: tuple[AnswerCheck, ...]
    trained_on: int = 0
    max_accuracy_drop: float = 0.0

    @model_validator(mode="after")
    def _one_check_per_level(self) -> AutoPolicy:
        if len(self.levels) < 2 or len(self.checks) != len(self.levels) - 1:
            raise ValueError("need at least two levels and one check per level below the last")
        return self

    @property
    def deepest(self) -> int:
        return len(self.levels) - 1

    def start(self, problem: str, *, top_k: int = 3) -> StageDecision:
        """Stage 1: the level that answers first."""
        features = extract_features(problem)
        p = self.stage1.score(features)
        level = self.deepest if p >= self.start_deepest_at else 0
        ranked = sorted(self.stage1.contributions(features).items(), key=lambda kv: -abs(kv[1]))
        pushes = ", ".join(f"{name} {value:+.2f}" for name, value in ranked[:top_k])
        reason = (
            f"stage 1: P(fast answer wrong)={p:.2f} (straight to {self.levels[-1]} from "
            f"{self.start_deepest_at:.2f}) → start at {self.levels[level]}; "
            f"top contributions: {pushes}"
        )
        return StageDecision(stage="stage1", level=level, stop=False, score=p, reason=reason)

    def after_answer(
        self, level: int, signals: Mapping[str, float], stage1_score: float
    ) -> StageDecision:
        """Stage 3: keep the answer of ``level`` or move one level up."""
        if level >= self.deepest:
            return StageDecision(
                stage="stage3",
                level=level,
                stop=True,
                score=0.0,
                reason=f"level {level} ({self.levels[level]}) is the deepest: keep it",
            )
        values = {**signals, STAGE1_INPUT: stage1_score}
        return self.checks[level].decide(level, values)


class AutoExample(BaseModel):
    """One labelled problem: every level's answer signals, correctness and tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    problem: str
    signals: tuple[dict[str, float], ...] = Field(description="Answer signals per level.")
    correct: tuple[bool, ...]
    tokens: tuple[float, ...]


class LadderScores(BaseModel):
    """Scores of examples under some policy (out-of-fold when fitted elsewhere)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    stage1: np.ndarray
    checks: tuple[np.ndarray, ...]
    vetoes: tuple[np.ndarray, ...] = Field((), description="Per check: escalates regardless.")


def ladder_outcome(
    scores: LadderScores,
    correct: np.ndarray,
    tokens: np.ndarray,
    *,
    start_deepest_at: float,
    escalate_at: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """(correct, tokens) per example of auto with these thresholds (arrays are n × levels)."""
    levels = correct.shape[1]
    done = scores.stage1 >= start_deepest_at
    final_ok = np.where(done, correct[:, -1], False)
    spent = np.where(done, tokens[:, -1], 0.0)
    for level in range(levels):
        running = ~done
        spent = spent + np.where(running, tokens[:, level], 0.0)
        if level == levels - 1:
            stop = running
        else:
            stop = running & (scores.checks[level] < escalate_at[level])
            if scores.vetoes:
                stop = stop & ~scores.vetoes[level]
        final_ok = np.where(stop, correct[:, level], final_ok)
        done = done | stop
    return final_ok, spent


def _grid(values: np.ndarray, size: int) -> list[float]:
    qs = np.quantile(values, np.linspace(0.0, 1.0, size)) if len(values) else np.array([])
    return sorted(
        {0.0, 1.0 + 1e-9, *qs.tolist(), *(values.tolist() if len(values) <= size else [])}
    )


def choose_thresholds(
    scores: Sequence[LadderScores],
    correct: np.ndarray,
    tokens: np.ndarray,
    *,
    max_accuracy_drop: float,
    grid: int = 40,
) -> tuple[float, tuple[float, ...]]:
    """The thresholds with the fewest mean tokens whose accuracy is within
    ``max_accuracy_drop`` of always-deepest (when none is, the cheapest of the most accurate).

    Accuracy and tokens are averaged over ``scores`` (e.g. several out-of-fold repeats), which
    steadies the choice where the curve is flat.
    """
    target = correct[:, -1].mean() - max_accuracy_drop - 1e-12
    pooled_stage1 = np.concatenate([s.stage1 for s in scores])
    stage1_grid = _grid(pooled_stage1, 12)
    levels = len(scores[0].checks)
    check_grids = [
        _grid(np.concatenate([s.checks[k] for s in scores]), grid if levels == 1 else grid // 2)
        for k in range(levels)
    ]
    best: tuple[tuple[float, float, float], float, tuple[float, ...]] | None = None
    for t1 in stage1_grid:
        for ts in itertools.product(*check_grids):
            runs = [
                ladder_outcome(s, correct, tokens, start_deepest_at=t1, escalate_at=ts)
                for s in scores
            ]
            acc = float(np.mean([ok.mean() for ok, _ in runs]))
            mean_tokens = float(np.mean([spent.mean() for _, spent in runs]))
            key = (0.0, 0.0, mean_tokens) if acc >= target else (1.0, -acc, mean_tokens)
            if best is None or key < best[0]:
                best = (key, t1, ts)
    assert best is not None
    return best[1], best[2]


def _check_matrix(examples: Sequence[AutoExample], level: int, stage1: np.ndarray) -> np.ndarray:
    rows = [signal_vector(e.signals[level], ANSWER_SIGNAL_NAMES) for e in examples]
    return np.column_stack([np.array(rows), stage1])


def fit_scores(
    examples: Sequence[AutoExample], *, l2: float = 1.0
) -> tuple[RouterModel, tuple[LinearScore, ...]]:
    """Stage 1 (label: the fast answer is wrong) and one wrong-answer score per check level."""
    x1 = feature_matrix([e.problem for e in examples])
    fast_wrong = np.array([not e.correct[0] for e in examples], dtype=float)
    s1 = LinearScore.fit(x1, fast_wrong, FEATURE_NAMES, l2=l2)
    stage1 = RouterModel(
        mean=s1.mean,
        scale=s1.scale,
        weights=s1.weights,
        bias=s1.bias,
        l2=l2,
        trained_on=len(examples),
    )
    p1 = stage1.scores([e.problem for e in examples])
    levels = len(examples[0].correct)
    checks = []
    for level in range(levels - 1):
        x = _check_matrix(examples, level, p1)
        y = np.array([not e.correct[level] for e in examples], dtype=float)
        checks.append(LinearScore.fit(x, y, (*ANSWER_SIGNAL_NAMES, STAGE1_INPUT), l2=l2))
    return stage1, tuple(checks)


def score_examples(
    stage1: RouterModel, checks: Sequence[LinearScore], examples: Sequence[AutoExample]
) -> LadderScores:
    """Scores of ``examples`` under fitted models (vectorised twin of :class:`AutoPolicy`)."""
    p1 = stage1.scores([e.problem for e in examples])
    per_level, vetoes = [], []
    for level, check in enumerate(checks):
        values = [
            {**e.signals[level], STAGE1_INPUT: float(p)} for e, p in zip(examples, p1, strict=True)
        ]
        per_level.append(np.array([check.score(v) for v in values]))
        vetoes.append(
            np.array([any(v.get(n, 0.0) > 0 for n in ESCALATE_ON) for v in values], dtype=bool)
        )
    return LadderScores(stage1=p1, checks=tuple(per_level), vetoes=tuple(vetoes))


def assemble_policy(
    levels: Sequence[str],
    stage1: RouterModel,
    checks: Sequence[LinearScore],
    *,
    start_deepest_at: float,
    escalate_at: Sequence[float],
    trained_on: int,
    max_accuracy_drop: float,
) -> AutoPolicy:
    t = min(start_deepest_at, 1.0)
    return AutoPolicy(
        levels=tuple(levels),
        stage1=stage1.model_copy(
            update={"thresholds": RouterThresholds(fast_below=t, slow_at_or_above=t)}
        ),
        start_deepest_at=start_deepest_at,
        checks=tuple(
            AnswerCheck(score=c, escalate_at=e) for c, e in zip(checks, escalate_at, strict=True)
        ),
        trained_on=trained_on,
        max_accuracy_drop=max_accuracy_drop,
    )


def as_arrays(examples: Sequence[AutoExample]) -> tuple[np.ndarray, np.ndarray]:
    """(correct, tokens), n × levels."""
    correct = np.array([e.correct for e in examples], dtype=bool)
    tokens = np.array([e.tokens for e in examples], dtype=float)
    return correct, tokens


def fit_auto_policy(
    levels: Sequence[str],
    examples: Sequence[AutoExample],
    *,
    threshold_scores: Sequence[LadderScores] = (),
    max_accuracy_drop: float = 0.005,
    l2: float = 1.0,
) -> AutoPolicy:
    """Fit the scores on ``examples`` and place the thresholds on ``threshold_scores`` (the
    out-of-fold scores of the same examples, e.g. several repeats; in-sample, hence optimistic,
    when empty)."""
    if len(examples) < 4:
        raise ValueError("need at least four examples to fit auto")
    stage1, checks = fit_scores(examples, l2=l2)
    scores = list(threshold_scores) or [score_examples(stage1, checks, examples)]
    correct, tokens = as_arrays(examples)
    t1, ts = choose_thresholds(scores, correct, tokens, max_accuracy_drop=max_accuracy_drop)
    return assemble_policy(
        levels,
        stage1,
        checks,
        start_deepest_at=t1,
        escalate_at=ts,
        trained_on=len(examples),
        max_accuracy_drop=max_accuracy_drop,
    )
