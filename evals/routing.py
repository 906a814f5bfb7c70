"""Auto vs always-fast / always-slow / oracle on a ladder of recorded answers.

Auto is :class:`policies.auto.AutoPolicy`, run problem by problem exactly as a service would run
it: stage 1 on the problem text, then after each answer its signals
(:mod:`policies.answer_signals`, computed here from what the service would see) decide whether to
keep it or move up. Each problem's tokens are those of every level that ran.

When auto is fitted on the same ladder it is cross-validated by problem: k folds by a hash of the
``problem_id``; for each fold the policy is fitted on the others (its thresholds placed on their
own inner out-of-fold scores) and run on the fold. The oracle (the cheapest level whose answer is
right, the deepest when none is) is a bound that reads the labels; it is labelled as such.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evals.pairs import Ladder, LadderProblem, cut_answer, same_answer
from policies.answer_signals import AnswerView, answer_signals
from policies.auto import (
    AutoExample,
    AutoPolicy,
    LadderScores,
    fit_auto_policy,
    fit_scores,
    score_examples,
)
from verifiers.claims import check_claims


def level_signals(problem: LadderProblem) -> tuple[dict[str, float], ...]:
    """The answer signals of every level, each seeing the cheaper levels' answers."""
    out = []
    for level, ans in enumerate(problem.answers):
        earlier = tuple(a.answer for a in problem.answers[:level])
        view = AnswerView(
            problem=problem.problem,
            text=ans.text,
            answer=ans.answer,
            thinking_chars=ans.thinking_chars,
            earlier=earlier,
            agrees=tuple(same_answer(ans.answer, e) for e in earlier),
            refuted_claims=check_claims(ans.text).refuted,
        )
        out.append(answer_signals(view))
    return tuple(out)


def probed(problem: LadderProblem, probe_max_tokens: int | None) -> LadderProblem:
    """The problem as auto meets it: the fast answer is a probe, cut at the service's
    ``probe_max_tokens`` (None: uncut)."""
    if probe_max_tokens is None:
        return problem
    fast, *rest = problem.answers
    return problem.model_copy(update={"answers": (cut_answer(fast, probe_max_tokens), *rest)})


def examples_of(ladder: Ladder, *, probe_max_tokens: int | None = None) -> list[AutoExample]:
    """Auto's view of every problem (the fast answer cut at ``probe_max_tokens``)."""
    out = []
    for problem in ladder.problems:
        p = probed(problem, probe_max_tokens)
        out.append(
            AutoExample(
                problem=p.problem,
                signals=level_signals(p),
                correct=tuple(a.correct for a in p.answers),
                tokens=tuple(float(a.tokens) for a in p.answers),
            )
        )
    return out


class Arm(BaseModel):
    """One way of answering every problem."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    accuracy: float = Field(description="Share of problems answered right (0-1).")
    mean_tokens: float
    tokens_vs_slow: float = Field(description="mean_tokens ÷ always-slow's − 1.")


class Decisions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    stage1: dict[str, int] = Field(description="Level each problem started at.")
    stage3: dict[str, int] = Field(description="Kept / escalated, per level.")
    answered_by: dict[str, int] = Field(description="Level whose answer was returned.")


class Acceptance(BaseModel):
    """Issue 18's target, computed: auto vs always-slow and the oracle bound."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    share_of_oracle_saving: float = Field(description="(slow − auto) ÷ (slow − oracle) tokens.")
    accuracy_vs_slow_pt: float
    beats_fast: bool
    passed: bool


class RoutingReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    files: tuple[str, ...]
    levels: tuple[str, ...]
    problems: int
    dropped: int
    cross_validated: bool
    folds: int
    tokens_note: str
    fast: Arm
    slow: Arm
    thinkers: dict[str, Arm] = Field(description="Always-<level> for every thinker.")
    oracle: Arm = Field(description="ORACLE bound: reads the labels.")
    auto: Arm
    decisions: Decisions
    acceptance: Acceptance


def _fold_of(problem_id: str, folds: int) -> int:
    return int.from_bytes(hashlib.sha256(problem_id.encode()).digest()[:4], "big") % folds


class AutoOutcome(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    started_at: int
    answered_by: int
    correct: bool
    tokens: float
    trail: tuple[str, ...] = Field(description="Each decision's reason, in order.")
    escalations: tuple[int, ...] = Field(description="Levels whose answer was not kept.")
    kept: int | None


def run_auto(policy: AutoPolicy, problem: LadderProblem, example: AutoExample) -> AutoOutcome:
    """One request through auto, level by level (the service's order of events)."""
    start = policy.start(problem.problem)
    trail, escalations, level, spent = [start.reason], [], start.level, 0.0
    while True:
        spent += example.tokens[level]
        step = policy.after_answer(level, example.signals[level], start.score)
        trail.append(step.reason)
        if step.stop:
            kept = level if level < policy.deepest else None
            break
        escalations.append(level)
        level = step.level
    return AutoOutcome(
        started_at=start.level,
        answered_by=level,
        correct=example.correct[level],
        tokens=spent,
        trail=tuple(trail),
        escalations=tuple(escalations),
        kept=kept,
    )


def outcomes_of(
    policy: AutoPolicy, ladder: Ladder, *, probe_max_tokens: int | None = None
) -> dict[str, AutoOutcome]:
    """Every problem of ``ladder`` through ``policy`` (the probe cut at ``probe_max_tokens``)."""
    examples = examples_of(ladder, probe_max_tokens=probe_max_tokens)
    return {
        p.problem_id: run_auto(policy, p, e) for p, e in zip(ladder.problems, examples, strict=True)
    }


def _inner_scores(
    examples: Sequence[AutoExample], ids: Sequence[str], folds: int, l2: float, repeat: int = 0
) -> LadderScores:
    """Out-of-fold scores of ``examples`` (for placing thresholds); ``repeat`` reshuffles."""
    fold = np.array([_fold_of(f"{i}/inner{repeat}", folds) for i in ids])
    levels = len(examples[0].correct)
    stage1 = np.zeros(len(examples))
    checks = [np.zeros(len(examples)) for _ in range(levels - 1)]
    vetoes = [np.zeros(len(examples), dtype=bool) for _ in range(levels - 1)]
    for f in range(folds):
        held = np.flatnonzero(fold == f)
        train = [examples[int(i)] for i in np.flatnonzero(fold != f)]
        if not len(held) or len(train) < 4:
            continue
        s1, cs = fit_scores(train, l2=l2)
        scores = score_examples(s1, cs, [examples[int(i)] for i in held])
        stage1[held] = scores.stage1
        for level, (c, v) in enumerate(zip(scores.checks, scores.vetoes, strict=True)):
            checks[level][held] = c
            vetoes[level][held] = v
    return LadderScores(stage1=stage1, checks=tuple(checks), vetoes=tuple(vetoes))


def fit_policy(
    levels: Sequence[str],
    examples: Sequence[AutoExample],
    ids: Sequence[str],
    *,
    folds: int = 5,
    max_accuracy_drop: float = 0.005,
    l2: float = 1.0,
    repeats: int = 3,
) -> AutoPolicy:
    """Fit auto on ``examples``; thresholds placed on their inner out-of-fold scores."""
    return fit_auto_policy(
        levels,
        examples,
        threshold_scores=[_inner_scores(examples, ids, folds, l2, r) for r in range(repeats)],
        max_accuracy_drop=max_accuracy_drop,
        l2=l2,
    )


def fit_on_ladders(
    ladders: Sequence[Ladder],
    *,
    folds: int = 5,
    max_accuracy_drop: float = 0.005,
    l2: float = 1.0,
    probe_max_tokens: int | None = None,
) -> AutoPolicy:
    """One policy fitted on the problems of every ladder (same levels), e.g. GSM8K and MATH,
    as auto sees them (the fast answer cut at ``probe_max_tokens``)."""
    if not ladders:
        raise ValueError("need at least one ladder")
    depth = {len(ladder.levels) for ladder in ladders}
    if len(depth) != 1:
        raise ValueError(f"the ladders have different numbers of levels: {sorted(depth)}")
    examples = [
        e for ladder in ladders for e in examples_of(ladder, probe_max_tokens=probe_max_tokens)
    ]
    ids = [p.problem_id for ladder in ladders for p in ladder.problems]
    if len(set(ids)) != len(ids):
        raise ValueError("a problem_id occurs in more than one ladder")
    return fit_policy(
        ladders[0].levels, examples, ids, folds=folds, max_accuracy_drop=max_accuracy_drop, l2=l2
    )


def _arm(correct: np.ndarray, tokens: np.ndarray, slow_tokens: float) -> Arm:
    mean = float(tokens.mean())
    return Arm(
        accuracy=float(correct.mean()), mean_tokens=mean, tokens_vs_slow=mean / slow_tokens - 1
    )


def evaluate(
    ladder: Ladder,
    *,
    policy: AutoPolicy | None = None,
    folds: int = 5,
    max_accuracy_drop: float = 0.005,
    l2: float = 1.0,
    tokens_note: str = "",
    probe_max_tokens: int | None = None,
    also_train_on: Sequence[Ladder] = (),
) -> RoutingReport:
    """Every arm on ``ladder``; auto is ``policy`` as given, else cross-validated.

    Auto's fast answer is the service's probe, cut at ``probe_max_tokens`` (None: uncut); the
    always-fast arm and the oracle read the whole fast answer. ``also_train_on``: other ladders
    (same levels) added to every fold's training problems, never scored, as when the shipped
    policy is fitted on several problem sets.
    """
    examples = examples_of(ladder, probe_max_tokens=probe_max_tokens)
    ids = [p.problem_id for p in ladder.problems]
    extra = [e for x in also_train_on for e in examples_of(x, probe_max_tokens=probe_max_tokens)]
    extra_ids = [p.problem_id for x in also_train_on for p in x.problems]
    if set(extra_ids) & set(ids) or any(len(x.levels) != len(ladder.levels) for x in also_train_on):
        raise ValueError("also_train_on needs other problems answered at as many levels")
    outcomes: list[AutoOutcome | None] = [None] * len(examples)
    if policy is not None:
        if len(policy.levels) != len(ladder.levels):
            raise ValueError(
                f"the policy has {len(policy.levels)} levels, the files {len(ladder.levels)}"
            )
        outcomes = [run_auto(policy, p, e) for p, e in zip(ladder.problems, examples, strict=True)]
    else:
        fold = [_fold_of(i, folds) for i in ids]
        for f in range(folds):
            train = [i for i, g in enumerate(fold) if g != f]
            fitted = fit_policy(
                ladder.levels,
                [examples[i] for i in train] + extra,
                [ids[i] for i in train] + extra_ids,
                folds=folds,
                max_accuracy_drop=max_accuracy_drop,
                l2=l2,
            )
            for i, g in enumerate(fold):
                if g == f:
                    outcomes[i] = run_auto(fitted, ladder.problems[i], examples[i])
    done = [o for o in outcomes if o is not None]
    correct = np.array([[a.correct for a in p.answers] for p in ladder.problems], dtype=bool)
    tokens = np.array([[a.tokens for a in p.answers] for p in ladder.problems], dtype=float)
    slow_tokens = float(tokens[:, -1].mean())
    right = np.asarray(correct.any(axis=1), dtype=bool)
    cheapest = np.where(right, correct.argmax(axis=1), tokens.shape[1] - 1)
    oracle_tokens = tokens[np.arange(len(examples)), cheapest]
    auto_ok = np.array([o.correct for o in done])
    auto_tokens = np.array([o.tokens for o in done])
    arms = {
        "fast": _arm(correct[:, 0], tokens[:, 0], slow_tokens),
        "slow": _arm(correct[:, -1], tokens[:, -1], slow_tokens),
        "oracle": _arm(right, oracle_tokens, slow_tokens),
        "auto": _arm(auto_ok, auto_tokens, slow_tokens),
    }
    return RoutingReport(
        files=ladder.files,
        levels=ladder.levels,
        problems=len(examples),
        dropped=ladder.dropped,
        cross_validated=policy is None,
        folds=folds if policy is None else 0,
        tokens_note=tokens_note,
        thinkers={
            ladder.levels[k]: _arm(correct[:, k], tokens[:, k], slow_tokens)
            for k in range(1, len(ladder.levels))
        },
        decisions=_decisions(ladder.levels, done),
        acceptance=acceptance(arms),
        **arms,
    )


def _decisions(levels: Sequence[str], outcomes: Sequence[AutoOutcome]) -> Decisions:
    stage3: Counter[str] = Counter()
    for o in outcomes:
        for level in o.escalations:
            stage3[f"{levels[level]}: escalated"] += 1
        if o.kept is not None:
            stage3[f"{levels[o.kept]}: kept"] += 1
    return Decisions(
        stage1=dict(Counter(levels[o.started_at] for o in outcomes)),
        stage3=dict(stage3),
        answered_by=dict(Counter(levels[o.answered_by] for o in outcomes)),
    )


def acceptance(arms: dict[str, Arm]) -> Acceptance:
    slow, oracle, auto, fast = arms["slow"], arms["oracle"], arms["auto"], arms["fast"]
    oracle_saving = slow.mean_tokens - oracle.mean_tokens
    share = (slow.mean_tokens - auto.mean_tokens) / oracle_saving if oracle_saving > 0 else 0.0
    delta = 100 * (auto.accuracy - slow.accuracy)
    beats = auto.accuracy > fast.accuracy
    return Acceptance(
        share_of_oracle_saving=share,
        accuracy_vs_slow_pt=delta,
        beats_fast=beats,
        passed=share >= 0.6 and delta >= -1.0 - 1e-9 and beats,
    )


def arm_rows(report: RoutingReport) -> list[tuple[str, str, str, str]]:
    """(arm, accuracy, mean tokens, tokens vs slow) rows, the oracle marked as a bound."""
    arms = [("always-fast", report.fast)]
    arms += [(f"always-{name}", arm) for name, arm in report.thinkers.items()]
    arms += [("auto (cross-validated)" if report.cross_validated else "auto", report.auto)]
    arms += [("oracle (bound, reads the labels)", report.oracle)]
    return [
        (name, f"{arm.accuracy:.1%}", f"{arm.mean_tokens:,.0f}", f"{arm.tokens_vs_slow:+.0%}")
        for name, arm in arms
    ]


def verdict_line(report: RoutingReport) -> str:
    a = report.acceptance
    return (
        f"auto saves {a.share_of_oracle_saving:.0%} of what the oracle saves against always-slow "
        f"(target ≥ 60%), at {a.accuracy_vs_slow_pt:+.1f} pt vs always-slow (target ≥ −1 pt), "
        f"{'more' if a.beats_fast else 'not more'} accurate than always-fast → "
        f"{'PASS' if a.passed else 'FAIL'}"
    )
