"""Fast / slow thinking router: stage 1 (prompt features → logistic score) and stage 3
(probe-and-escalate), plus fitting from eval results and the accuracy / token trade-off.

Stage 1. ``P(needs slow) = sigmoid(b + Σ w_i · (x_i - mean_i) / scale_i)`` over the features of
:mod:`policies.features`. Below ``fast_below`` → fast, at or above ``slow_at_or_above`` → slow,
in between → uncertain (the caller runs stage 2 / 3, or thinks slowly when it has neither). The
reason names the features that pushed the score most.

Fitting. A problem *needs slow thinking* when slow mode solved it and fast mode did not. The
logistic model is fitted by Newton's method (IRLS) with an L2 penalty on the weights. The
trade-off curve routes ``p >= t`` to slow for every threshold ``t`` and reports accuracy and mean
tokens; the slow threshold is the largest ``t`` whose accuracy is within ``max_accuracy_drop`` of
all-slow, and the uncertain band lies ``uncertain_margin`` below it. On the fitting data the curve
is optimistic: report it on held-out examples with :func:`tradeoff_report`.

Stage 3. Answer in fast mode with k cheap samples; escalate to slow thinking when they disagree
(share of the largest equivalent group below ``min_agreement``), when a sample has no answer, or
when their mean confidence is below ``min_confidence``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.features import FEATURE_NAMES, PromptFeatures, extract_features
from policies.modes import EffortPolicy, ReasoningEffort, ThinkingMode


class RouteVerdict(StrEnum):
    FAST = "fast"
    SLOW = "slow"
    UNCERTAIN = "uncertain"


class ModeDecision(BaseModel):
    """A routing decision and why it was taken."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RouteVerdict
    reason: str
    score: float | None = Field(default=None, description="P(needs slow thinking) from stage 1.")
    features: dict[str, float] = Field(default_factory=dict)
    thinking_budget: int | None = Field(
        default=None, description="Budget that comes with the mode."
    )


class RouterThresholds(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fast_below: float = Field(default=0.4, ge=0.0, le=1.0)
    slow_at_or_above: float = Field(default=0.6, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> RouterThresholds:
        if self.fast_below > self.slow_at_or_above:
            raise ValueError("fast_below must be <= slow_at_or_above")
        return self


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, max_iter: int = 100, tol: float = 1e-10
) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton / IRLS; the bias is not penalised."""
    n, d = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    beta = np.zeros(d + 1)
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0
    for _ in range(max_iter):
        p = _sigmoid(design @ beta)
        gradient = design.T @ (p - y) + penalty * beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        hessian[-1, -1] += 1e-9  # keeps a separable bias finite
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if float(np.max(np.abs(step))) < tol:
            break
    return beta[:-1], float(beta[-1])


class RouterModel(BaseModel):
    """Stage-1 router: standardised features → logistic score → verdict. JSON round-trips."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature_names: tuple[str, ...] = FEATURE_NAMES
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    thresholds: RouterThresholds = Field(default_factory=RouterThresholds)
    l2: float = 1.0
    trained_on: int = Field(default=0, description="Examples the model was fitted on.")

    @model_validator(mode="after")
    def _shapes(self) -> RouterModel:
        d = len(self.feature_names)
        if not len(self.mean) == len(self.scale) == len(self.weights) == d:
            raise ValueError("mean, scale and weights need one value per feature")
        if min(self.scale) <= 0:
            raise ValueError("scales must be > 0")
        return self

    def _standardised(self, features: PromptFeatures) -> np.ndarray:
        centred = features.vector(self.feature_names) - np.array(self.mean)
        return np.asarray(centred / np.array(self.scale), dtype=float)

    def contributions(self, features: PromptFeatures) -> dict[str, float]:
        """Each feature's additive share of the logit."""
        z = self._standardised(features) * np.array(self.weights)
        return {name: float(v) for name, v in zip(self.feature_names, z, strict=True)}

    def score(self, features: PromptFeatures) -> float:
        """P(needs slow thinking)."""
        logit = self.bias + sum(self.contributions(features).values())
        return float(_sigmoid(np.array(logit)))

    def scores(self, prompts: Sequence[str]) -> np.ndarray:
        return np.array([self.score(extract_features(p)) for p in prompts])

    def verdict(self, score: float) -> RouteVerdict:
        if score < self.thresholds.fast_below:
            return RouteVerdict.FAST
        if score >= self.thresholds.slow_at_or_above:
            return RouteVerdict.SLOW
        return RouteVerdict.UNCERTAIN

    def decide(self, prompt: str, *, top_k: int = 3) -> ModeDecision:
        """Stage-1 decision with the ``top_k`` features that pushed the score most."""
        features = extract_features(prompt)
        score = self.score(features)
        verdict = self.verdict(score)
        ranked = sorted(self.contributions(features).items(), key=lambda kv: -abs(kv[1]))
        pushes = ", ".join(f"{name} {value:+.2f}" for name, value in ranked[:top_k])
        t = self.thresholds
        reason = (
            f"stage 1: P(needs slow)={score:.2f} (fast below {t.fast_below:.2f}, slow from "
            f"{t.slow_at_or_above:.2f}) → {verdict.value}; top contributions: {pushes}"
        )
        return ModeDecision(mode=verdict, reason=reason, score=score, features=features.values)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> RouterModel:
        return cls.model_validate_json(text)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> RouterModel:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


class RouterExample(BaseModel):
    """One evaluated problem: solved in each mode, and tokens spent in each."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    solved_fast: bool
    solved_slow: bool
    tokens_fast: float = Field(..., ge=0)
    tokens_slow: float = Field(..., ge=0)

    @property
    def needs_slow(self) -> bool:
        return self.solved_slow and not self.solved_fast


class TradeoffPoint(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(..., description="Route to slow when P(needs slow) >= this.")
    accuracy: float
    mean_tokens: float
    slow_fraction: float


class TradeoffReport(BaseModel):
    """Accuracy / token trade-off of routing by threshold, with the all-fast / all-slow ends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    examples: int
    fast_accuracy: float
    slow_accuracy: float
    fast_mean_tokens: float
    slow_mean_tokens: float
    curve: tuple[TradeoffPoint, ...]


def tradeoff_report(model: RouterModel, examples: Sequence[RouterExample]) -> TradeoffReport:
    """Route ``examples`` at every distinct threshold and report accuracy and mean tokens."""
    if not examples:
        raise ValueError("need at least one example")
    scores = model.scores([e.prompt for e in examples])
    fast_ok = np.array([e.solved_fast for e in examples], dtype=float)
    slow_ok = np.array([e.solved_slow for e in examples], dtype=float)
    fast_tokens = np.array([e.tokens_fast for e in examples])
    slow_tokens = np.array([e.tokens_slow for e in examples])
    thresholds = sorted({0.0, *scores.tolist(), math.nextafter(1.0, 2.0)})
    curve = []
    for t in thresholds:
        slow = scores >= t
        curve.append(
            TradeoffPoint(
                threshold=t,
                accuracy=float(np.where(slow, slow_ok, fast_ok).mean()),
                mean_tokens=float(np.where(slow, slow_tokens, fast_tokens).mean()),
                slow_fraction=float(slow.mean()),
            )
        )
    return TradeoffReport(
        examples=len(examples),
        fast_accuracy=float(fast_ok.mean()),
        slow_accuracy=float(slow_ok.mean()),
        fast_mean_tokens=float(fast_tokens.mean()),
        slow_mean_tokens=float(slow_tokens.mean()),
        curve=tuple(curve),
    )


def fit_router(
    examples: Sequence[RouterExample],
    *,
    l2: float = 1.0,
    max_accuracy_drop: float = 0.02,
    uncertain_margin: float = 0.1,
) -> RouterModel:
    """Fit stage 1 on eval results and place its thresholds (see the module docstring)."""
    if len(examples) < 2:
        raise ValueError("need at least two examples to fit a router")
    x = np.array([extract_features(e.prompt).vector() for e in examples])
    y = np.array([e.needs_slow for e in examples], dtype=float)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    weights, bias = fit_logistic((x - mean) / scale, y, l2=l2)
    unplaced = RouterModel(
        mean=tuple(mean.tolist()),
        scale=tuple(scale.tolist()),
        weights=tuple(weights.tolist()),
        bias=bias,
        l2=l2,
        trained_on=len(examples),
    )
    report = tradeoff_report(unplaced, examples)
    good_enough = [
        p for p in report.curve if p.accuracy >= report.slow_accuracy - max_accuracy_drop - 1e-12
    ]
    slow_from = min(max(p.threshold for p in good_enough), 1.0)
    thresholds = RouterThresholds(
        fast_below=max(0.0, slow_from - uncertain_margin), slow_at_or_above=slow_from
    )
    return unplaced.model_copy(update={"thresholds": thresholds})


class ProbeDecision(BaseModel):
    """Stage 3: whether the fast probes settle the question."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    escalate: bool
    reason: str
    agreement: float = Field(..., description="Share of probes in the largest answer group.")
    majority_answer: str | None
    groups: tuple[tuple[int, ...], ...] = Field(
        default=..., description="Probe indices per equivalent-answer group, largest first."
    )


def _group(
    answers: Sequence[str | None], equivalent: Callable[[str, str], bool] | None
) -> list[list[int]]:
    same = equivalent or (lambda a, b: a == b)
    groups: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for g in groups:
            representative = answers[g[0]]
            if representative is not None and same(representative, answer):
                g.append(i)
                break
        else:
            groups.append([i])
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def probe_decision(
    answers: Sequence[str | None],
    *,
    equivalent: Callable[[str, str], bool] | None = None,
    min_agreement: float = 1.0,
    confidences: Sequence[float] | None = None,
    min_confidence: float = 0.0,
) -> ProbeDecision:
    """Escalate to slow thinking unless the fast probes agree (and are confident enough).

    ``answers`` are the probes' extracted answers (None: none found); ``equivalent`` decides
    whether two answers are the same (exact string equality when None, i.e. pre-clustered keys).
    """
    k = len(answers)
    if k == 0:
        return ProbeDecision(
            escalate=True,
            reason="stage 3: escalate to slow: no probe samples",
            agreement=0.0,
            majority_answer=None,
            groups=(),
        )
    groups = _group(answers, equivalent)
    largest = groups[0] if groups else []
    agreement = len(largest) / k
    majority = answers[largest[0]] if largest else None
    unanswered = sum(a is None for a in answers)
    problems = []
    if agreement < min_agreement - 1e-12:
        problems.append(
            f"{len(groups)} distinct answers, largest group {len(largest)}/{k} "
            f"< {min_agreement:.0%} agreement"
        )
    if unanswered:
        problems.append(f"{unanswered}/{k} probes gave no answer")
    if confidences is not None:
        if len(confidences) != k:
            raise ValueError("need one confidence per answer")
        mean_confidence = float(np.mean(confidences))
        if mean_confidence < min_confidence:
            problems.append(f"mean confidence {mean_confidence:.2f} < {min_confidence:.2f}")
    reason = (
        "stage 3: escalate to slow: " + "; ".join(problems)
        if problems
        else f"stage 3: {len(largest)}/{k} fast probes agree on {majority!r}: stay fast"
    )
    return ProbeDecision(
        escalate=bool(problems),
        reason=reason,
        agreement=agreement,
        majority_answer=majority,
        groups=tuple(tuple(g) for g in groups),
    )


def resolve_mode(
    prompt: str,
    *,
    mode: ThinkingMode | None = None,
    effort: ReasoningEffort | str | None = None,
    thinking_budget: int | None = None,
    router: RouterModel | None = None,
    effort_policy: EffortPolicy | None = None,
    default: ThinkingMode = ThinkingMode.SLOW,
) -> ModeDecision:
    """The mode of one request: explicit ``mode`` > ``reasoning_effort`` > default, and
    ``auto`` asks the stage-1 router (slow when there is no router model).

    An explicit ``thinking_budget`` overrides the budget that comes with the effort level.
    """
    if mode is None and effort is not None:
        setting = (effort_policy or EffortPolicy()).setting_for(effort)
        budget = thinking_budget if thinking_budget is not None else setting.thinking_budget
        return ModeDecision(
            mode=RouteVerdict(setting.mode.value),
            reason=f"reasoning_effort={ReasoningEffort(effort).value} maps to {setting.mode.value}",
            thinking_budget=budget,
        )
    chosen = mode or default
    if chosen is not ThinkingMode.AUTO:
        source = "requested" if mode is not None else "server default"
        return ModeDecision(
            mode=RouteVerdict(chosen.value),
            reason=f"mode {chosen.value} ({source})",
            thinking_budget=thinking_budget,
        )
    if router is None:
        return ModeDecision(
            mode=RouteVerdict.SLOW,
            reason="mode auto without a fitted router model: slow",
            thinking_budget=thinking_budget,
        )
    decision = router.decide(prompt)
    return decision.model_copy(update={"thinking_budget": thinking_budget})
