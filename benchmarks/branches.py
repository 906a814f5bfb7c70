"""Branch-parallel throughput and orchestrator concurrency (issue 3).

1. Real llama.cpp worker (SmolLM2, 8 slots): one request with N branches through the service vs
   N concurrent direct requests to the same worker, same prompt and seeds. Aggregate decode
   throughput = all completion tokens / wall time; the ratio is orchestrated ÷ direct.
2. Replay engine at a high token rate: one request with N branches of known length; the added
   latency is measured wall time over the ideal (length ÷ rate). Levels run in order until one
   adds more than 10%: the N before it is the limit found; when none does, the largest N tried
   is only a lower bound and the report says so.

Run: `.venv/bin/python -m benchmarks.branches [--out R.json]`; `--from R.json` renders the
docs section from a recorded result (`benchmarks.branches_report`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.branches_report import (
    ADDED_LATENCY_LIMIT,
    SECTION,
    BranchesResult,
    ConcurrencyRow,
    ThroughputRow,
    branches_body,
    recorded_command,
)
from benchmarks.common import write_section
from benchmarks.service import cpu_pool, replay_pool, start_service

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


async def _direct(
    client: httpx.AsyncClient, url: str, n: int, max_tokens: int, seed: int
) -> tuple[int, float]:
    async def one(i: int) -> int:
        body = {
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": max_tokens,
            "seed": seed + i,
            "temperature": 0.8,
        }
        r = await client.post(f"{url}/v1/chat/completions", json=body, timeout=600)
        return int(r.json()["usage"]["completion_tokens"])

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(n)))
    return sum(tokens), time.perf_counter() - start


async def _orchestrated(
    client: httpx.AsyncClient, url: str, n: int, max_tokens: int, seed: int
) -> tuple[int, float]:
    body = {
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "tts": {"n_branches": n, "seed": seed, "aggregation": "weighted", "early_stop": "none"},
    }
    start = time.perf_counter()
    r = await client.post(f"{url}/v1/chat/completions", json=body, timeout=600)
    wall = time.perf_counter() - start
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"]), wall


async def throughput(
    service_url: str, worker_url: str, *, reps: int, max_tokens: int
) -> list[ThroughputRow]:
    rows = []
    async with httpx.AsyncClient() as client:
        await _direct(client, worker_url, 2, 8, 0)
        for n in (4, 8):
            d_rates, o_rates = [], []
            for rep in range(reps):
                seed = 1000 * (rep + 1)
                dt, dw = await _direct(client, worker_url, n, max_tokens, seed)
                ot, ow = await _orchestrated(client, service_url, n, max_tokens, seed)
                d_rates.append(dt / dw)
                o_rates.append(ot / ow)
            d, o = statistics.median(d_rates), statistics.median(o_rates)
            rows.append(ThroughputRow(n, reps, d, o, o / d))
            print(rows[-1], flush=True)
    return rows


def _trace_file(path: Path, n: int, words: int) -> str:
    problem = "BENCH-CONCURRENCY: tell me about the sea."
    with path.open("w") as f:
        for i in range(n):
            out = (
                "<think>" + "The sea is wide and deep today. " * (words // 7) + "</think>\\boxed{1}"
            )
            f.write(
                json.dumps(
                    {
                        "id": f"bench/{i}",
                        "dataset": "synthetic",
                        "model": f"bench-{i:04d}",
                        "problem": problem,
                        "ground_truth": "1",
                        "output": out,
                        "is_correct": True,
                        "thinking_delimiters": ["<think>", "</think>"],
                        "complete": True,
                    }
                )
                + "\n"
            )
    return problem


async def concurrency(
    service_url: str, problem: str, *, ns: list[int], rate: float
) -> list[ConcurrencyRow]:
    """Levels in order until one adds more than the limit (that level is kept: it is the
    failure that bounds the claim)."""
    rows = []
    async with httpx.AsyncClient() as client:
        body_base = {
            "model": "replay",
            "messages": [{"role": "user", "content": problem}],
            "max_tokens": 20_000,
        }
        # ideal = a single branch's length at the configured rate (measured once at N=1)
        r = await client.post(
            f"{service_url}/v1/chat/completions",
            json={**body_base, "tts": {"n_branches": 1}},
            timeout=600,
        )
        tokens_one = int(r.json()["usage"]["completion_tokens"])
        for n in ns:
            body = {
                **body_base,
                "tts": {
                    "n_branches": n,
                    "seed": 0,
                    "aggregation": "weighted",
                    "early_stop": "none",
                },
            }
            start = time.perf_counter()
            r = await client.post(f"{service_url}/v1/chat/completions", json=body, timeout=600)
            wall = time.perf_counter() - start
            r.raise_for_status()
            rows.append(ConcurrencyRow.measured(n, tokens_one, rate, wall))
            print(rows[-1], flush=True)
            if rows[-1].added > ADDED_LATENCY_LIMIT:
                break
    return rows


def measure(args: argparse.Namespace) -> BranchesResult:
    with tempfile.TemporaryDirectory() as tmp:
        service = start_service(
            {"pools": [cpu_pool(n_parallel=8, n_ctx=8192)], "ray": {"num_cpus": 2}}, Path(tmp)
        )
        try:
            pools = httpx.get(f"{service.url}/v1/pools", timeout=10).json()["data"]
            worker = pools[0]["processes"][0]["url"]
            t1 = asyncio.run(
                throughput(service.url, worker, reps=args.reps, max_tokens=args.max_tokens)
            )
        finally:
            service.stop()
        ns = [1, 8, 16, 32, 64, 128, 256]
        problem = _trace_file(Path(tmp) / "bench.jsonl", max(ns), args.words)
        (Path(tmp) / "replay").mkdir()
        cfg: dict[str, Any] = {
            "server": {"default_max_tokens": 20_000},
            "tts": {"max_branches": max(ns)},
            "pools": [replay_pool(traces=[str(Path(tmp) / "bench.jsonl")], tokens_per_s=args.rate)],
            "ray": {"num_cpus": 2},
        }
        cfg["pools"][0]["replay"]["max_parallel"] = max(ns)
        service = start_service(cfg, Path(tmp) / "replay")
        try:
            t2 = asyncio.run(concurrency(service.url, problem, ns=ns, rate=args.rate))
        finally:
            service.stop()
    return BranchesResult(
        command=run_command(args),
        measured_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        max_tokens=args.max_tokens,
        rate=args.rate,
        throughput=t1,
        concurrency=t2,
    )


def run_command(args: argparse.Namespace) -> str:
    return (
        f"python -m benchmarks.branches --reps {args.reps} --max-tokens {args.max_tokens} "
        f"--rate {args.rate:.0f} --words {args.words}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rate", type=float, default=100.0, help="replay tokens/s per branch")
    ap.add_argument("--words", type=int, default=700, help="replay branch length (words)")
    ap.add_argument("--out", default=None, help="write the result JSON here")
    ap.add_argument(
        "--from", dest="from_file", default=None, help="render a recorded result JSON (no run)"
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if args.from_file:
        result = BranchesResult.load(args.from_file)
        command = recorded_command(args.from_file)
    else:
        result = measure(args)
        command = run_command(args)
        if args.out:
            result.save(args.out)
            command += f" --out {args.out}"
    body = branches_body(result, recorded=args.from_file)
    print(body)
    if not args.no_write:
        write_section(SECTION, body, command)


if __name__ == "__main__":
    main()
