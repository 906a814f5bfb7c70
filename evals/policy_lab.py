"""Policy experiments that can fail: the planner vs every fixed config, per latency budget.

On one bank and one profile set:

* every **fixed config** (pool × N × thinking budget of the planner's grid) is simulated once;
* for each latency budget B, the **best fixed config** is the most accurate one whose mean
  latency is within B (chosen with hindsight over the whole bank: the strongest fixed rival);
* the **policy** is the same bank simulated with ``tts.latency_budget_s = B`` and no N: the
  service's planner (`tts_orchestrator.planning.Planner`, the real allocator) chooses pool, N and
  budget per request, with its latency model's branch lengths fitted to the bank's recorded
  lengths (what a deployment configures from past traffic) and the default accuracy curve.

Per budget the policy is *better*, *tie* or *worse* (worse also when its mean latency exceeds B).
The verdict is computed: **PASS** only if it is never worse and strictly better at two or more
budgets; never worse otherwise is **TIE**; any worse budget is **FAIL**.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from evals.simulation import SimulationLab, SimulationModel, SimulationResult, load_profiles
from policies.latency import LognormalBranchLengths
from tts_orchestrator.config.planning import PlannerSettings
from tts_orchestrator.protocol import TtsOptions

__all__ = [
    "BudgetOutcome",
    "ConfigResult",
    "PolicyReport",
    "Verdict",
    "compare",
    "policy_markdown",
    "run_policy_experiment",
    "verdict_of",
]


class Outcome(StrEnum):
    BETTER = "better"
    TIE = "tie"
    WORSE = "worse"


class Verdict(StrEnum):
    PASS = "PASS"
    TIE = "TIE"
    FAIL = "FAIL"


class ConfigResult(BaseModel):
    label: str
    pool: str
    n_branches: int | None
    thinking_budget: int | None
    accuracy: float
    mean_latency_s: float
    mean_tokens: float


class BudgetOutcome(BaseModel):
    budget_s: float
    best_fixed: ConfigResult | None = Field(description="None: no fixed config fits.")
    policy: ConfigResult
    policy_choices: dict[str, int] = Field(description="Planned `pool N budget` -> requests.")
    outcome: Outcome
    why: str


class PolicyReport(BaseModel):
    profile: str
    bank: list[str]
    tokenizer: str
    problems: int
    group_sizes: dict[int, int]
    samples: int
    fixed: list[ConfigResult]
    budgets: list[BudgetOutcome]
    verdict: Verdict
    rule: str = (
        "PASS: never worse than the best fixed config within the budget and strictly better "
        "at >= 2 budgets; TIE: never worse otherwise; FAIL: worse (or over budget) at any."
    )


def compare(
    policy: ConfigResult, best: ConfigResult | None, budget_s: float
) -> tuple[Outcome, str]:
    """One budget's outcome (exact comparison of accuracy point estimates: a tie is a tie)."""
    over = policy.mean_latency_s > budget_s
    if best is None:
        if over:
            return Outcome.TIE, "neither the policy nor any fixed config fits"
        return Outcome.BETTER, "no fixed config fits; the policy does"
    if over:
        return Outcome.WORSE, f"policy over budget ({policy.mean_latency_s:.1f} s > {budget_s} s)"
    if policy.accuracy > best.accuracy:
        return Outcome.BETTER, f"{policy.accuracy:.4f} > {best.accuracy:.4f}"
    if policy.accuracy == best.accuracy:
        return Outcome.TIE, f"{policy.accuracy:.4f} = {best.accuracy:.4f}"
    return Outcome.WORSE, f"{policy.accuracy:.4f} < {best.accuracy:.4f}"


def verdict_of(outcomes: Sequence[Outcome]) -> Verdict:
    if any(o is Outcome.WORSE for o in outcomes):
        return Verdict.FAIL
    return Verdict.PASS if sum(o is Outcome.BETTER for o in outcomes) >= 2 else Verdict.TIE


def _config(label: str, result: SimulationResult) -> ConfigResult:
    requests = result.requests
    n = {r.n_branches for r in requests}
    budget = {r.thinking_budget for r in requests}
    count = len(requests) or 1
    return ConfigResult(
        label=label,
        pool=result.pool,
        n_branches=n.pop() if len(n) == 1 else None,
        thinking_budget=budget.pop() if len(budget) == 1 else None,
        accuracy=result.accuracy,
        mean_latency_s=result.mean_latency_s,
        mean_tokens=sum(r.thinking_tokens + r.answer_tokens for r in requests) / count,
    )


async def run_policy_experiment(
    lab: SimulationLab,
    *,
    profile: str,
    budgets_s: Sequence[float],
    n_branches: Sequence[int] = (1, 2, 4, 8),
    thinking_budgets: Sequence[int | None] = (None,),
    samples: int = 1,
    relative: bool = False,
) -> PolicyReport:
    """Fixed configs and the planner over `lab`'s groups that hold at least max(N) records.
    With `relative`, budgets are multiples of the fastest fixed config's mean latency."""
    profiles = load_profiles(profile)
    lab.groups = [g for g in lab.groups if g.size >= max(n_branches)]
    if not lab.groups:
        raise ValueError(f"no problem has {max(n_branches)} recorded samples")
    lab.bank.prepare([t for g in lab.groups for t in g.traces])
    lengths = [
        lab.bank.counter.count(t.thinking_text) + lab.bank.counter.count(t.answer_text)
        for g in lab.groups
        for t in g.traces
    ]
    planner = PlannerSettings(
        n_branches=tuple(n_branches),
        thinking_budgets=tuple(thinking_budgets),
        lengths=LognormalBranchLengths.fit(lengths),
    )
    model = SimulationModel(profile=profile, samples=samples, planner=planner)
    fixed: list[ConfigResult] = []
    last: SimulationResult | None = None
    for pool in profiles.pools:
        for n in n_branches:
            for budget in thinking_budgets:
                tts = TtsOptions(n_branches=n, pool=pool, thinking_budget=budget)
                last = await lab.run(tts, model)
                fixed.append(_config(f"{pool} N={n} budget={budget}", last))
    assert last is not None
    if relative:
        fastest = min(c.mean_latency_s for c in fixed)
        budgets_s = [round(m * fastest, 3) for m in budgets_s]
    outcomes = []
    for budget_s in budgets_s:
        planned = await lab.run(TtsOptions(latency_budget_s=budget_s), model)
        policy = _config(f"policy @ {budget_s:g} s", planned)
        fitting = [c for c in fixed if c.mean_latency_s <= budget_s]
        best = max(fitting, key=lambda c: (c.accuracy, -c.mean_latency_s), default=None)
        outcome, why = compare(policy, best, budget_s)
        choices: dict[str, int] = {}
        for r in planned.requests:
            key = f"{r.pool} N={r.n_branches} budget={r.thinking_budget}"
            choices[key] = choices.get(key, 0) + 1
        outcomes.append(
            BudgetOutcome(
                budget_s=budget_s,
                best_fixed=best,
                policy=policy,
                policy_choices=dict(sorted(choices.items())),
                outcome=outcome,
                why=why,
            )
        )
    return PolicyReport(
        profile=Path(profile).stem,
        bank=[p.name for p in lab.files],
        tokenizer=lab.bank.counter.name,
        problems=last.problems,
        group_sizes=last.group_sizes,
        samples=samples,
        fixed=fixed,
        budgets=outcomes,
        verdict=verdict_of([o.outcome for o in outcomes]),
    )


def policy_markdown(report: PolicyReport, *, command: str) -> str:
    lines = [
        f"# Policy vs fixed configs: profile `{report.profile}`",
        "",
        f"Command: `{command}`  ",
        f"Bank: {', '.join(report.bank)}; {report.problems} problems (group sizes "
        f"{report.group_sizes}), {report.samples} simulated request(s) per problem. Tokens: "
        f"{report.tokenizer}.",
        "",
        f"**Verdict: {report.verdict.value}** ({report.rule})",
        "",
        "| budget (s) | best fixed config within budget | its accuracy | its latency (s) "
        "| policy accuracy | policy latency (s) | policy's choices | outcome |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for b in report.budgets:
        best = b.best_fixed
        choices = ", ".join(f"{k} ×{v}" for k, v in b.policy_choices.items())
        lines.append(
            f"| {b.budget_s:g} | {best.label if best else '—'} "
            f"| {f'{100 * best.accuracy:.1f}%' if best else '—'} "
            f"| {f'{best.mean_latency_s:.1f}' if best else '—'} "
            f"| {100 * b.policy.accuracy:.1f}% | {b.policy.mean_latency_s:.1f} | {choices} "
            f"| {b.outcome.value}: {b.why} |"
        )
    lines += [
        "",
        "Fixed configs (each simulated once over the bank):",
        "",
        "| config | accuracy | mean latency (s) | mean tokens |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c in sorted(report.fixed, key=lambda c: c.mean_latency_s):
        lines.append(
            f"| {c.label} | {100 * c.accuracy:.1f}% | {c.mean_latency_s:.1f} "
            f"| {c.mean_tokens:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_policy(report: PolicyReport, path: Path) -> Path:
    """Accuracy vs mean latency: fixed configs as points, the policy per budget as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 5.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for pool in sorted({c.pool for c in report.fixed}):
        mine = [c for c in report.fixed if c.pool == pool]
        axes.scatter(
            [c.mean_latency_s for c in mine],
            [100 * c.accuracy for c in mine],
            label=f"fixed, pool {pool}",
        )
        for c in mine:
            cut = "" if c.thinking_budget is None else f" b{c.thinking_budget}"
            axes.annotate(
                f"N={c.n_branches}{cut}", (c.mean_latency_s, 100 * c.accuracy), fontsize=7
            )
    xs = np.array([b.policy.mean_latency_s for b in report.budgets])
    ys = np.array([100 * b.policy.accuracy for b in report.budgets])
    axes.plot(xs, ys, "k-o", label="policy (one point per budget)")
    for b in report.budgets:
        axes.axvline(b.budget_s, color="grey", lw=0.5, ls=":")
    axes.set_xlabel("mean latency per request (s)")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"profile {report.profile}: verdict {report.verdict.value}")
    axes.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
