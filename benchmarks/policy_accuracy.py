"""Policy accuracy at a latency budget: the planner vs fixed N=1 and N=4 (issue 4).

The real service runs `deploy/configs/cpu-speculative.yaml` (Qwen2.5-Coder-1.5B-Instruct, pools
`plain` and `draft` = drafted by the 0.5B, k=4) on a private Redis. Both pools are profiled in
place (as `benchmarks.latency_model` does) and the profiles are written to that Redis, where the
service's live planner reloads them (`tts_orchestrator.planning.live.LivePlanner.refresh`); no
accuracy logs are configured, so the planner's accuracy estimate is the documented default curve
(`policies.accuracy.DefaultAccuracyCurve`) and its branch lengths the default lognormal
(`tts_orchestrator.planning.planner`).

MATH-500 problems of levels 1-3 (level-balanced, lowest sha256(id) per level) are each sent in
three configurations, one request in flight, configurations shuffled per problem:

* ``fixed-1``: ``tts: {n_branches: 1, latency_budget_s: B}`` (first pool of the model: plain)
* ``fixed-4``: ``tts: {n_branches: 4, latency_budget_s: B}`` (idem)
* ``policy``:  ``tts: {latency_budget_s: B}``: the planner picks pool x N x thinking budget

No mode requested (the `generic` family's default: fast, messages as sent), temperature 0.6, the
same prompt and seed for the three, max_tokens 1536 so the budget binds, not max_tokens: a
config that runs what another ran (the policy choosing plain N=1) gets the same answer. The
engine keeps prompts in its prompt cache (slots and host memory), so the config sent second
would find the prompt cached by the first: before the three, one 1-token request per pool puts
the prompt in every pool's cache and all three start alike (the first branch's prefill is then
nearly free; further branches may still prefill). Every policy request's record (`GET
/v1/requests/{id}`) must hold a `plan`; requests without one are counted. Answers are graded by
math-verify (`verifiers.grading.Grader`).

Run: ``.venv/bin/python -m benchmarks.policy_accuracy --problems 30 --budget 45 --out R.json``
(about an hour on 2 cores: at most problems x 3 x budget of requests, plus ~5 min to start and
profile); ``--quick`` checks the pipeline on 2 problems with a 10 s budget. ``--out`` keeps the
result (profiles, every outcome); ``--from R.json`` renders the docs section from it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, Field

from benchmarks.common import write_section
from benchmarks.latency_model import CONFIG, MODEL, profile_pools, profile_table, worker_urls
from benchmarks.modes import messages_for
from benchmarks.service import start_service
from evals.datasets import BuiltinDataset, Problem, load_builtin
from policies.profile import ProfileSet
from tts_orchestrator.config import Settings
from tts_orchestrator.planning.profiler import ProfilerSettings, ProfileRun
from tts_orchestrator.planning.store import RedisProfileStore
from tts_orchestrator.state.embedded import EmbeddedRedis
from verifiers.grading import Grader

LEVELS = (1, 2, 3)
SECTION = "Latency policy vs fixed N at the same budget"
CONFIGS = ("fixed-1", "fixed-4", "policy")
MAX_TOKENS = 1536  # a slot holds 8192 / 4 = 2048 tokens: prompt + 1536 fits
OVER_BUDGET_SLACK_S = 1.0  # answering after the budget (abort, vote, HTTP) is not a miss


def select_problems(limit: int, *, levels: tuple[int, ...] = LEVELS) -> list[Problem]:
    """``ceil(limit / len(levels))`` problems per level, lowest sha256(id) first, taken levels
    in turn and cut to ``limit``, so every prefix is level-balanced."""
    per_level = -(-limit // len(levels))

    def key(p: Problem) -> str:
        return hashlib.sha256(p.id.encode()).hexdigest()

    problems = load_builtin(BuiltinDataset.MATH500)
    by_level = {
        level: sorted((p for p in problems if p.level == level), key=key)[:per_level]
        for level in levels
    }
    interleaved = [
        by_level[lv][i] for i in range(per_level) for lv in levels if i < len(by_level[lv])
    ]
    return interleaved[:limit]


def tts_block(config: str, budget_s: float) -> dict[str, Any]:
    """No mode: the generic family's default, the model's own working (messages as sent)."""
    if config == "policy":
        return {"latency_budget_s": budget_s}
    n = int(config.removeprefix("fixed-"))
    return {"n_branches": n, "latency_budget_s": budget_s}


async def warm_prompt(client: httpx.AsyncClient, problem: Problem, pools: list[str]) -> None:
    """Put the problem's prompt into every pool's prompt cache (one 1-token request each)."""
    for pool in pools:
        body = {
            "model": MODEL,
            "messages": messages_for(problem),
            "max_tokens": 1,
            "tts": {"n_branches": 1, "pool": pool, "mode": "fast"},
        }
        r = await client.post("/v1/chat/completions", json=body, timeout=600)
        r.raise_for_status()


@dataclass(frozen=True)
class PlanChoice:
    """What the planner chose for one request (from its record's ``plan``)."""

    pool: str
    n_branches: int
    thinking_budget: int | None
    met_constraints: bool
    predicted_latency_s: float | None = None
    step_time_s: float | None = None  # the chosen pool's profile at N=1, as the planner saw it

    def label(self) -> str:
        return f"N={self.n_branches} {self.pool}"


def plan_choice(record: dict[str, Any]) -> PlanChoice | None:
    """The plan in a request record (``GET /v1/requests/{id}``); None when it was not planned."""
    plan = record.get("plan")
    if not plan:
        return None
    latency = plan.get("predicted_latency_s")
    step = (plan.get("profiles") or {}).get(plan["pool"], {}).get("step_time_s_at_1")
    return PlanChoice(
        pool=str(plan["pool"]),
        n_branches=int(plan["n_branches"]),
        thinking_budget=plan.get("thinking_budget"),
        met_constraints=bool(plan.get("met_constraints", True)),
        predicted_latency_s=float(latency) if latency is not None else None,
        step_time_s=float(step) if step is not None else None,
    )


@dataclass
class Outcome:
    config: str
    problem_id: str
    level: int | None
    correct: bool = False
    latency_s: float = 0.0
    completion_tokens: int = 0
    pool: str = ""
    n_branches: int = 0
    plan: PlanChoice | None = None
    error: str | None = None

    def ran(self) -> str:
        return f"N={self.n_branches} {self.pool}"


def p95(xs: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    if not xs:
        return float("nan")
    ordered = sorted(xs)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def _counts(items: list[str]) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in sorted(Counter(items).items())) or "—"


def config_table(outcomes: list[Outcome], *, budget_s: float) -> str:
    rows = [
        "| config | problems | failed | accuracy | mean latency (s) | p95 latency (s) "
        "| over budget | mean completion tokens | ran (N × pool) | thinking budget |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for config in CONFIGS:
        mine = [o for o in outcomes if o.config == config]
        if not mine:
            continue
        ok = [o for o in mine if o.error is None]
        latencies = [o.latency_s for o in ok]
        over = sum(t > budget_s + OVER_BUDGET_SLACK_S for t in latencies)
        planned = [o.plan for o in ok if o.plan is not None]
        budgets = _counts([str(p.thinking_budget or "none") for p in planned])
        rows.append(
            f"| {config} | {len(mine)} | {len(mine) - len(ok)} "
            f"| {sum(o.correct for o in mine) / len(mine):.1%} "
            f"| {statistics.fmean(latencies) if ok else float('nan'):.1f} "
            f"| {p95(latencies):.1f} | {over} "
            f"| {statistics.fmean(o.completion_tokens for o in ok) if ok else 0:,.0f} "
            f"| {_counts([o.ran() for o in ok])} | {budgets if planned else '—'} |"
        )
    return "\n".join(rows)


def unplanned(outcomes: list[Outcome]) -> int:
    """Policy requests that ran but whose record holds no plan."""
    return sum(o.config == "policy" and o.error is None and o.plan is None for o in outcomes)


def plan_summary(outcomes: list[Outcome]) -> str:
    """How many policy requests were planned, and how many plans fit the budget by prediction."""
    ran = [o for o in outcomes if o.config == "policy" and o.error is None]
    plans = [o.plan for o in ran if o.plan is not None]
    fit = sum(p.met_constraints for p in plans)
    predicted = [p.predicted_latency_s for p in plans if p.predicted_latency_s is not None]
    mean = f"; mean predicted latency {statistics.fmean(predicted):.1f} s" if predicted else ""
    steps = [(p.pool, p.step_time_s) for p in plans if p.step_time_s is not None]
    drift = (
        f" Chosen pool's step time at N=1 in the plans (live updates): first {steps[0][0]} "
        f"{steps[0][1] * 1e3:.0f} ms, last {steps[-1][0]} {steps[-1][1] * 1e3:.0f} ms."
        if steps
        else ""
    )
    return (
        f"Policy requests planned: {len(plans)}/{len(ran)}; predicted within the budget: {fit}, "
        f"nothing predicted within it (the fastest configuration taken): {len(plans) - fit}{mean}."
        + drift
    )


class Verdict(StrEnum):
    PASS = "PASS"
    TIE = "TIE"
    FAIL = "FAIL"
    INCOMPLETE = "incomplete run"


VERDICT_RULE = (
    "PASS when the policy answers more problems right than the best fixed config, TIE when as "
    "many, FAIL when fewer or when a policy request was not planned"
)


def verdict(outcomes: list[Outcome]) -> tuple[Verdict, str]:
    """Policy vs the best of fixed-1 / fixed-4 on the same problems (failures count wrong);
    the rule is :data:`VERDICT_RULE`: a tie is a tie, never a pass."""
    correct = {c: sum(o.correct for o in outcomes if o.config == c) for c in CONFIGS}
    totals = {c: sum(o.config == c for o in outcomes) for c in CONFIGS}
    if not all(totals.values()) or len(set(totals.values())) != 1:
        return Verdict.INCOMPLETE, f"**Verdict: incomplete run** (requests per config: {totals})."
    total = totals["policy"]
    best = max(CONFIGS[:-1], key=lambda c: correct[c])
    if unplanned(outcomes) or correct["policy"] < correct[best]:
        result = Verdict.FAIL
    elif correct["policy"] == correct[best]:
        result = Verdict.TIE
    else:
        result = Verdict.PASS
    right = {(o.config, o.problem_id) for o in outcomes if o.correct}
    ids = sorted({o.problem_id for o in outcomes})
    paired = []
    for fixed in CONFIGS[:-1]:
        wins = sum(("policy", i) in right and (fixed, i) not in right for i in ids)
        losses = sum((fixed, i) in right and ("policy", i) not in right for i in ids)
        paired.append(f"vs {fixed}: {wins} won, {losses} lost")
    latency = {
        c: statistics.fmean(o.latency_s for o in outcomes if o.config == c and o.error is None)
        for c in ("policy", best)
        if any(o.config == c and o.error is None for o in outcomes)
    }
    slower = (
        f"; mean latency policy {latency['policy']:.1f} s, {best} {latency[best]:.1f} s"
        if len(latency) == 2
        else ""
    )
    text = (
        f"**Verdict: {result.value}** ({VERDICT_RULE}): policy {correct['policy']}/{total} vs "
        f"fixed-1 {correct['fixed-1']}/{total}, fixed-4 {correct['fixed-4']}/{total} "
        f"(best fixed: {best}); per problem {'; '.join(paired)}{slower}."
    )
    if unplanned(outcomes):
        text += f" {unplanned(outcomes)} policy requests were NOT planned."
    return result, text


async def ask(
    client: httpx.AsyncClient,
    grader: Grader,
    problem: Problem,
    *,
    config: str,
    budget_s: float,
    seed: int,
    temperature: float,
) -> Outcome:
    outcome = Outcome(config=config, problem_id=problem.id, level=problem.level)
    body = {
        "model": MODEL,
        "messages": messages_for(problem),
        "max_tokens": MAX_TOKENS,
        "temperature": temperature,
        "seed": seed,
        "tts": tts_block(config, budget_s),
    }
    start = time.perf_counter()
    try:
        r = await client.post("/v1/chat/completions", json=body, timeout=budget_s + 600)
        r.raise_for_status()
        outcome.latency_s = time.perf_counter() - start
        data = r.json()
        record = await client.get(f"/v1/requests/{data['id']}", timeout=30)
        record.raise_for_status()
    except httpx.HTTPError as exc:
        outcome.error = (
            f"HTTP {exc.response.status_code}: {exc.response.text[:300]}"
            if isinstance(exc, httpx.HTTPStatusError)
            else f"{type(exc).__name__}: {exc}"
        )
        return outcome
    message = data["choices"][0]["message"]
    content = message.get("content") or message.get("reasoning_content") or ""
    outcome.correct = (await grader.grade(content, problem.answer)).verdict
    outcome.completion_tokens = int(data["usage"]["completion_tokens"])
    rec = record.json()
    outcome.pool = str(rec.get("pool", ""))
    outcome.n_branches = len(rec.get("branches") or []) or 1
    outcome.plan = plan_choice(rec)
    return outcome


async def publish_profiles(redis_url: str, runs: list[ProfileRun]) -> ProfileSet:
    """Put the measured profiles where the service's live planner reloads them from."""
    profiles = ProfileSet.of(run.profile for run in runs)
    store = RedisProfileStore.from_url(redis_url)
    try:
        await store.put_all(profiles)
    finally:
        await store.aclose()
    return profiles


async def collect(
    problems: list[Problem], args: argparse.Namespace
) -> tuple[list[ProfileRun], list[Outcome]]:
    """Start the service on a private Redis, profile and publish, then ask every config."""
    config = yaml.safe_load(CONFIG.read_text())
    config["ray"] = {"num_cpus": 2}
    settings = Settings.model_validate(config)
    profiler = ProfilerSettings(
        concurrencies=(1, 2) if args.quick else (1, 2, 4),
        decode_tokens=32 if args.quick else 64,
        prefill_tokens=128,
    )
    outcomes: list[Outcome] = []
    rng = random.Random(args.seed)
    async with EmbeddedRedis() as redis:
        config["redis"] = {"url": redis.url}
        with tempfile.TemporaryDirectory(prefix="bench-policy-") as tmp:
            service = start_service(config, Path(tmp), timeout_s=600)
            try:
                async with httpx.AsyncClient(base_url=service.url) as client, Grader() as grader:
                    urls = await worker_urls(client, service)
                    runs = await profile_pools(settings, urls, profiler)
                    print(profile_table(runs), flush=True)
                    await publish_profiles(redis.url, runs)
                    # The live planner reloads the store every live_update_interval_s.
                    await asyncio.sleep(2 * settings.policy.live_update_interval_s + 1)
                    for i, problem in enumerate(problems):
                        order = list(CONFIGS)
                        rng.shuffle(order)
                        await warm_prompt(client, problem, list(urls))
                        for name in order:
                            o = await ask(
                                client,
                                grader,
                                problem,
                                config=name,
                                budget_s=args.budget,
                                seed=args.seed + i,
                                temperature=args.temperature,
                            )
                            outcomes.append(o)
                            _print(i, problem, o)
                            if name == "policy" and o.error is None and o.plan is None and i == 0:
                                raise RuntimeError(
                                    "the first policy request was not planned: is the profile "
                                    f"in Redis?\n{service.log_tail()}"
                                )
            finally:
                service.stop()
    return runs, outcomes


def _print(i: int, problem: Problem, o: Outcome) -> None:
    status = o.error or (
        f"{'✓' if o.correct else '✗'} {o.latency_s:.1f}s {o.completion_tokens} tok {o.ran()}"
        + (f" plan {o.plan.label()}" if o.plan else "")
    )
    print(f"#{i} L{problem.level} {o.config:7} {problem.id}: {status}", flush=True)


class PolicyAccuracyResult(BaseModel):
    """Everything the section is computed from; ``--out`` writes it, ``--from`` renders it."""

    command: str
    measured_at: str
    budget: float
    temperature: float
    problems: list[tuple[str, int | None]] = Field(description="(id, level) in the order run.")
    runs: list[ProfileRun]
    outcomes: list[Outcome]

    def save(self, path: str | Path) -> None:
        data = self.model_dump(mode="json", exclude={"outcomes"})
        data["outcomes"] = [asdict(o) for o in self.outcomes]
        Path(path).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> PolicyAccuracyResult:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        outcomes = []
        for raw in data.pop("outcomes"):
            plan = raw.pop("plan")
            outcomes.append(Outcome(**raw, plan=PlanChoice(**plan) if plan else None))
        return cls.model_validate({**data, "outcomes": outcomes})


def report(result: PolicyAccuracyResult) -> str:
    """The docs section's body, from the run's result alone (pure)."""
    runs, outcomes, problems = result.runs, result.outcomes, result.problems
    levels = dict(sorted(Counter(level for _, level in problems).items()))
    _, text = verdict(outcomes)
    return (
        f"Run: `{result.command}`, {result.measured_at}. Service on "
        f"`deploy/configs/cpu-speculative.yaml` ({MODEL}, Q4_K_M, llama.cpp, 2 threads; "
        f"pools `plain` and `draft` = drafted by Qwen2.5-Coder-0.5B, k=4). {len(problems)} "
        f"MATH-500 problems (levels {levels}, lowest sha256(id) per level), latency budget "
        f"**{result.budget:g} s** for every request, one in flight, configs shuffled per problem; "
        f"no mode requested (the generic default: messages as sent), temperature "
        f"{result.temperature}, the same prompt and seed for the three "
        f"configs, max_tokens {MAX_TOKENS}; each problem's prompt is put into both pools' prompt "
        "caches first (one 1-token request each), so no config finds it cached by another. "
        "fixed-N = `tts.n_branches` on the model's first pool (plain); policy = only "
        "`tts.latency_budget_s`, planned by the service from the profiles below (measured in "
        "place, written to the service's Redis, then updated by live traffic), the default "
        "accuracy curve (no eval logs are configured or shipped) and the default branch-length "
        "lognormal. Over budget = "
        f"latency > budget + {OVER_BUDGET_SLACK_S:g} s. Accuracy by math-verify; a failed "
        f"request counts as wrong.\n\n{profile_table(runs)}\n"
        f"{config_table(outcomes, budget_s=result.budget)}\n\n{plan_summary(outcomes)}\n\n{text}\n"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", type=int, default=None, help="MATH-500 L1-3 (default 30)")
    ap.add_argument("--budget", type=float, default=None, help="latency budget s (default 45)")
    ap.add_argument("--quick", action="store_true", help="2 problems, 10 s budget")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default=None, help="write the result JSON (every outcome) here")
    ap.add_argument(
        "--from", dest="from_file", default=None, help="render a recorded --out result (no run)"
    )
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.from_file:
        result = PolicyAccuracyResult.load(args.from_file)
        command = f"python -m benchmarks.policy_accuracy --from {args.from_file}"
    else:
        result = run(args)
        command = result.command + (f" --out {args.out}" if args.out else "")
        if args.out:
            result.save(args.out)
    body = report(result)
    print(body)
    if not args.no_write:
        write_section(SECTION, body, command)


def run(args: argparse.Namespace) -> PolicyAccuracyResult:
    args.problems = args.problems or (2 if args.quick else 30)
    args.budget = args.budget or (10.0 if args.quick else 45.0)
    problems = select_problems(args.problems)
    print(
        f"{len(problems)} problems x {len(CONFIGS)} configs at {args.budget:g} s: requests take "
        f"at most ~{len(problems) * len(CONFIGS) * args.budget / 60:.0f} min",
        flush=True,
    )
    runs, outcomes = asyncio.run(collect(problems, args))
    return PolicyAccuracyResult(
        command="python -m benchmarks.policy_accuracy"
        + (" --quick" if args.quick else "")
        + f" --problems {args.problems} --budget {args.budget:g}",
        measured_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        budget=args.budget,
        temperature=args.temperature,
        problems=[(p.id, p.level) for p in problems],
        runs=runs,
        outcomes=outcomes,
    )


if __name__ == "__main__":
    main()
