"""Latency model: predicted vs measured wall time of requests with N branches (issue 4).

The real service runs `deploy/configs/cpu-speculative.yaml` (Qwen2.5-Coder-1.5B-Instruct, pools
`plain` and `draft` = drafted by the 0.5B, k=4). First both pools' workers are profiled in place
(`tts_orchestrator.planning.profiler`, through the URLs `/v1/pools` reports), then every cell of
the grid N in {1, 2, 4} x pool x prompt set is measured: one request per problem through
`/v1/chat/completions` with `tts.n_branches = N`, `tts.pool`, no early stop, cells interleaved
per problem so machine noise hits all of them alike.

Prediction of a cell = mean over its requests of `LatencyModel.predict` (the request's real
prompt length, N, max_tokens, pool load 0) with the branch-length distribution of the *other*
cells of the same prompt set (empirical, leave-one-cell-out: lengths do not depend on the pool,
speculation is lossless, nor on N, branches are independent). A second prediction replaces the
distribution by each request's actual branch lengths, to separate the engine part of the model
from the length part. Error = |predicted - measured| / measured; the claim is the median over
cells.

Prompt sets: short arithmetic word problems (written for this benchmark) and the longest
MATH-500 problems of levels 1-3 (evals/data/math500.jsonl).

Run: `.venv/bin/python -m benchmarks.latency_model` (about an hour on 2 cores);
`--quick` checks the pipeline in a few minutes (N in {1, 2}, one problem per set, short answers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.common import write_section
from benchmarks.service import REPO, RunningService, start_service
from policies.latency import EmpiricalBranchLengths, LatencyModel, LognormalBranchLengths
from policies.profile import PoolProfile, ProfileSet, StepTimePoint
from tts_orchestrator.backends.llamacpp import LlamaCppBackend
from tts_orchestrator.config import Settings
from tts_orchestrator.config.planning import PlannerSettings
from tts_orchestrator.planning.profiler import ProfilerSettings, ProfileRun, WorkerProfiler

CONFIG = REPO / "deploy" / "configs" / "cpu-speculative.yaml"
MODEL = "qwen2.5-coder-1.5b-instruct"
INSTRUCTION = "Solve the problem. Reason step by step and put the final answer in \\boxed{}."

SHORT_PROBLEMS = (
    "A baker makes 36 rolls and sells two thirds of them. How many rolls are left?",
    "Tom has 5 boxes with 12 pencils each. He gives away 17 pencils. How many does he keep?",
    "A train travels 240 km in 3 hours. What is its average speed in km per hour?",
    "Sara saves 15 dollars a week. How many weeks does she need to save 180 dollars?",
    "A rectangle is 8 cm long and 5 cm wide. What is its perimeter in cm?",
    "There are 4 rows of 9 chairs and 7 more chairs by the door. How many chairs in total?",
    "A shirt costs 40 dollars and is sold at 25 percent off. What is the sale price?",
    "Ann is 3 times as old as Ben. Ben is 7. How old will Ann be in 5 years?",
)


@dataclass
class Measurement:
    prompt_set: str
    problem: int
    pool: str
    n_branches: int
    wall_s: float
    prompt_tokens: int
    branch_tokens: list[int] = field(default_factory=list)


def math500_long(k: int, *, levels: tuple[int, ...] = (1, 2, 3)) -> list[str]:
    """The k longest MATH-500 problem statements of the given levels (deterministic)."""
    rows = [json.loads(line) for line in (REPO / "evals" / "data" / "math500.jsonl").open()]
    rows = [r for r in rows if r["level"] in levels and "[asy]" not in r["problem"]]
    rows.sort(key=lambda r: (-len(r["problem"]), r["id"]))
    return [r["problem"] for r in rows[:k]]


async def worker_urls(client: httpx.AsyncClient, service: RunningService) -> dict[str, str]:
    pools = (await client.get(f"{service.url}/v1/pools", timeout=30)).json()["data"]
    return {p["name"]: p["processes"][0]["url"] for p in pools}


async def profile_pools(
    settings: Settings, urls: dict[str, str], profiler: ProfilerSettings
) -> list[ProfileRun]:
    runs = []
    async with httpx.AsyncClient() as client:
        for name, url in urls.items():
            pool = settings.pool(name)
            backend = LlamaCppBackend(url=url, model=pool.model, client=client, name=name)
            runs.append(await WorkerProfiler(backend, pool=pool, settings=profiler).run())
    return runs


async def measure(
    client: httpx.AsyncClient,
    service: RunningService,
    *,
    prompt_set: str,
    index: int,
    problem: str,
    pool: str,
    n: int,
    max_tokens: int,
    seed: int,
) -> Measurement:
    body = {
        "model": MODEL,
        # A fresh tag per request: no run finds the prompt in a slot's cache from an earlier one.
        "messages": [
            {"role": "user", "content": f"[{uuid.uuid4().hex[:8]}] {INSTRUCTION}\n\n{problem}"}
        ],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "tts": {"n_branches": n, "pool": pool, "seed": seed, "early_stop": "none"},
    }
    start = time.perf_counter()
    r = await client.post(f"{service.url}/v1/chat/completions", json=body, timeout=3600)
    wall = time.perf_counter() - start
    r.raise_for_status()
    data = r.json()
    branches = (data.get("tts") or {}).get("branches") or [
        {"tokens": data["usage"]["completion_tokens"]}
    ]
    return Measurement(
        prompt_set=prompt_set,
        problem=index,
        pool=pool,
        n_branches=n,
        wall_s=wall,
        # usage sums every branch's prompt; each branch prefills the same one
        prompt_tokens=int(data["usage"]["prompt_tokens"]) // len(branches),
        branch_tokens=[int(b["tokens"]) for b in branches],
    )


def actual_length_prediction(model: LatencyModel, profile: PoolProfile, m: Measurement) -> float:
    """The latency model's engine part fed with the request's real branch lengths."""
    lengths = sorted(m.branch_tokens)
    n = len(lengths)
    decode = 0.0
    previous = 0
    for j, length in enumerate(lengths):
        decode += (length - previous) * profile.step_time_s(n - j)
        previous = length
    decode /= profile.accepted_tokens_per_step
    prefill_tokens = m.prompt_tokens * (1 if profile.prefix_cache_shared else n)
    return profile.prefill_time_s(prefill_tokens) + decode + model.overhead_s


def predict_cells(
    measurements: list[Measurement],
    profiles: ProfileSet,
    *,
    max_tokens: int,
    overhead_s: float,
) -> list[dict[str, Any]]:
    cells: dict[tuple[str, str, int], list[Measurement]] = {}
    for m in measurements:
        cells.setdefault((m.prompt_set, m.pool, m.n_branches), []).append(m)
    rows = []
    for (prompt_set, pool, n), ms in sorted(cells.items()):
        others = [
            t
            for o in measurements
            if o.prompt_set == prompt_set and (o.pool, o.n_branches) != (pool, n)
            for t in o.branch_tokens
        ] or [t for m in ms for t in m.branch_tokens]
        model = LatencyModel(
            lengths=EmpiricalBranchLengths(samples=tuple(others)), overhead_s=overhead_s
        )
        profile = profiles.get(pool)
        predicted = statistics.mean(
            model.predict(
                profile, n_branches=n, prompt_tokens=m.prompt_tokens, max_tokens=max_tokens
            ).total_s
            for m in ms
        )
        with_actual = statistics.mean(actual_length_prediction(model, profile, m) for m in ms)
        measured = statistics.mean(m.wall_s for m in ms)
        rows.append(
            {
                "prompt_set": prompt_set,
                "pool": pool,
                "n": n,
                "requests": len(ms),
                "prompt_tokens": statistics.mean(m.prompt_tokens for m in ms),
                "slowest_branch": statistics.mean(max(m.branch_tokens) for m in ms),
                "measured_s": measured,
                "predicted_s": predicted,
                "error": abs(predicted - measured) / measured,
                "actual_lengths_s": with_actual,
                "actual_error": abs(with_actual - measured) / measured,
            }
        )
    return rows


def averaged(runs: list[ProfileRun]) -> ProfileSet:
    """One profile per pool: the mean of its runs (before and after the measurements), so a
    load change on a shared machine during the benchmark hits the prediction half-way."""
    by_pool: dict[str, list[PoolProfile]] = {}
    for run in runs:
        by_pool.setdefault(run.profile.pool, []).append(run.profile)
    out = []
    for profiles in by_pool.values():
        first = profiles[0]
        points = tuple(
            StepTimePoint(
                concurrency=point.concurrency,
                step_time_s=statistics.mean(p.step_time_s(point.concurrency) for p in profiles),
            )
            for point in first.step_times
        )
        out.append(
            first.model_copy(
                update={
                    "step_times": points,
                    "prefill_tokens_per_s": statistics.mean(
                        p.prefill_tokens_per_s for p in profiles
                    ),
                    "accepted_tokens_per_step": statistics.mean(
                        p.accepted_tokens_per_step for p in profiles
                    ),
                }
            )
        )
    return ProfileSet.of(out)


def profile_table(runs: list[ProfileRun]) -> str:
    lines = [
        "| pool | speculation | B | ms/token | tokens/s per branch | tokens/step | step ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        p = run.profile
        spec = p.speculative_method.value + (f" k={p.speculative_depth}" if p.speculates else "")
        lines += [
            f"| {p.pool} | {spec} | {s.concurrency} | {s.per_token_s * 1e3:.1f} | "
            f"{s.tokens_per_s:.2f} | {s.tokens_per_step:.2f} | "
            f"{p.step_time_s(s.concurrency) * 1e3:.1f} |"
            for s in run.samples
        ]
    prefill = ", ".join(f"{r.profile.pool} {r.profile.prefill_tokens_per_s:.0f}" for r in runs)
    shared = ", ".join(f"{r.profile.pool} {r.profile.prefix_cache_shared}" for r in runs)
    return "\n".join(lines) + f"\n\nPrefill tokens/s: {prefill}. Prefix shared: {shared}.\n"


def results_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| prompt set | pool | N | requests | prompt tok | slowest branch tok | measured s | "
        "predicted s | error | predicted, actual lengths s | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['prompt_set']} | {r['pool']} | {r['n']} | {r['requests']} | "
        f"{r['prompt_tokens']:.0f} | {r['slowest_branch']:.0f} | {r['measured_s']:.1f} | "
        f"{r['predicted_s']:.1f} | {r['error']:.0%} | {r['actual_lengths_s']:.1f} | "
        f"{r['actual_error']:.0%} |"
        for r in rows
    ]
    med = statistics.median(r["error"] for r in rows)
    med_actual = statistics.median(r["actual_error"] for r in rows)
    lines.append(
        f"\nMedian absolute error over {len(rows)} cells: **{med:.0%}** (length distribution "
        f"from the other cells), {med_actual:.0%} (each request's actual lengths)."
    )
    return "\n".join(lines)


@dataclass
class Plan:
    n_values: tuple[int, ...]
    per_set: int
    max_tokens: int
    sets: dict[str, list[str]]

    @classmethod
    def of(cls, args: argparse.Namespace) -> Plan:
        per_set = args.problems or (1 if args.quick else 5)
        return cls(
            n_values=(1, 2) if args.quick else (1, 2, 4),
            per_set=per_set,
            max_tokens=args.max_tokens or (96 if args.quick else 512),
            sets={
                "short arithmetic": list(SHORT_PROBLEMS[:per_set]),
                "MATH-500 long (L1-3)": math500_long(per_set),
            },
        )


async def collect(
    plan: Plan, *, quick: bool, seed: int
) -> tuple[list[ProfileRun], list[ProfileRun], list[Measurement]]:
    """Start the service, profile both pools in place, measure every cell, profile again."""
    config = yaml.safe_load(CONFIG.read_text())
    config["server"]["default_max_tokens"] = plan.max_tokens
    config["ray"] = {"num_cpus": 2}
    settings = Settings.model_validate(config)
    profiler = ProfilerSettings(
        concurrencies=plan.n_values, decode_tokens=32 if quick else 64, prefill_tokens=128
    )
    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory() as tmp:
        service = start_service(config, Path(tmp), timeout_s=600)
        try:
            async with httpx.AsyncClient() as client:
                urls = await worker_urls(client, service)
                before = await profile_pools(settings, urls, profiler)
                print(profile_table(before), flush=True)
                rng = random.Random(seed)
                for set_name, problems in plan.sets.items():
                    for i, problem in enumerate(problems):
                        order = [(p, n) for p in urls for n in plan.n_values]
                        rng.shuffle(order)
                        for pool, n in order:
                            m = await measure(
                                client,
                                service,
                                prompt_set=set_name,
                                index=i,
                                problem=problem,
                                pool=pool,
                                n=n,
                                max_tokens=plan.max_tokens,
                                seed=seed + 100 * i,
                            )
                            measurements.append(m)
                            print(
                                f"{set_name} #{i} {pool} N={n}: {m.wall_s:.1f}s "
                                f"branches {m.branch_tokens}",
                                flush=True,
                            )
                after = await profile_pools(settings, urls, profiler)
                print(profile_table(after), flush=True)
        finally:
            service.stop()
    return before, after, measurements


def length_fit(measurements: list[Measurement], *, max_tokens: int) -> str:
    """A lognormal fit per prompt set of the branch lengths (input for the planner default)."""
    lines = []
    for prompt_set in sorted({m.prompt_set for m in measurements}):
        lengths = [t for m in measurements if m.prompt_set == prompt_set for t in m.branch_tokens]
        capped = sum(t >= max_tokens for t in lengths) / len(lengths)
        try:
            fit = LognormalBranchLengths.fit(lengths)
        except ValueError:
            continue
        lines.append(
            f"- {prompt_set}: {len(lengths)} branches, median {statistics.median(lengths):.0f} "
            f"tokens, lognormal fit median {math.exp(fit.mu):.0f} sigma {fit.sigma:.2f}; "
            f"{capped:.0%} hit max_tokens"
        )
    if not lines:
        return "Branch lengths: no lognormal fit (every branch hit max_tokens).\n"
    return "Branch lengths:\n\n" + "\n".join(lines) + "\n"


def report(
    args: argparse.Namespace,
    plan: Plan,
    before: list[ProfileRun],
    after: list[ProfileRun],
    measurements: list[Measurement],
) -> None:
    runs = before + after
    profiles = averaged(runs)
    overhead_s = PlannerSettings().overhead_s
    rows = predict_cells(measurements, profiles, max_tokens=plan.max_tokens, overhead_s=overhead_s)
    body = (
        f"Service on `deploy/configs/cpu-speculative.yaml` ({MODEL}, Q4_K_M, llama.cpp, 2 threads"
        f"; `draft` = Qwen2.5-Coder-0.5B drafting, k=4), temperature 0.7, max_tokens "
        f"{plan.max_tokens}, no early stop, requests one at a time. Problems per prompt set: "
        f"{plan.per_set}.\n\nProfiles measured in place before and after the runs (the "
        f"prediction uses their mean):\n\n"
        f"Before:\n\n{profile_table(before)}\nAfter:\n\n{profile_table(after)}\n"
        f"{results_table(rows)}\n\n"
        f"{length_fit(measurements, max_tokens=plan.max_tokens)}"
    )
    print(body)
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "measurements": [asdict(m) for m in measurements],
                    "profiles": json.loads(profiles.to_json()),
                    "cells": rows,
                },
                indent=2,
            )
        )
    if not args.no_write:
        flags = [("--quick", args.quick), (f"--problems {args.problems}", args.problems)]
        flags += [(f"--max-tokens {args.max_tokens}", args.max_tokens)]
        flags += [(f"--seed {args.seed}", args.seed)]
        command = " ".join(["python -m benchmarks.latency_model", *(f for f, on in flags if on)])
        write_section("Latency model: predicted vs measured wall time", body, command)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N in {1, 2}, 1 problem per set")
    ap.add_argument("--problems", type=int, default=None, help="problems per prompt set")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write raw measurements as JSON")
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args()
    plan = Plan.of(args)
    before, after, measurements = asyncio.run(collect(plan, quick=args.quick, seed=args.seed))
    report(args, plan, before, after, measurements)


if __name__ == "__main__":
    main()
