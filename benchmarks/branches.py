"""Branch-parallel throughput and orchestrator concurrency (issue 3).

1. Real llama.cpp worker (SmolLM2, 8 slots): one request with N branches through the service vs
   N concurrent direct requests to the same worker, same prompt and seeds. Aggregate decode
   throughput = all completion tokens / wall time; the ratio is orchestrated ÷ direct.
2. Replay engine at a high token rate: one request with N branches of known length; the added
   latency is measured wall time over the ideal (length ÷ rate). The largest N within 10% is
   what one orchestrator process sustains on this machine.

Run: `.venv/bin/python -m benchmarks.branches`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

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


async def throughput(service_url: str, worker_url: str, *, reps: int, max_tokens: int) -> str:
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
            rows.append(f"| {n} | {reps} | {d:.1f} | {o:.1f} | {o / d:.3f} |")
    return (
        "| branches N | repetitions | direct tok/s (N concurrent requests) | orchestrated tok/s "
        "(1 request, N branches) | ratio |\n|---|---|---|---|---|\n" + "\n".join(rows)
    )


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
) -> tuple[str, int]:
    rows, sustained = [], 0
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
        ideal = tokens_one / rate
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
            added = wall / ideal - 1
            rows.append(
                f"| {n} | {tokens_one} | {rate:.0f} | {n * rate:.0f} | {ideal:.2f} | {wall:.2f} "
                f"| {added * 100:+.1f}% |"
            )
            if added <= 0.10:
                sustained = n
            else:
                break
    table = (
        "| concurrent branches | tokens per branch | tok/s per branch | aggregate tok/s offered | "
        "ideal wall (s) | measured wall (s) | added latency |\n|---|---|---|---|---|---|---|\n"
    )
    return table + "\n".join(rows), sustained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rate", type=float, default=100.0, help="replay tokens/s per branch")
    ap.add_argument("--words", type=int, default=700, help="replay branch length (words)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
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
            print(t1, flush=True)
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
            t2, sustained = asyncio.run(concurrency(service.url, problem, ns=ns, rate=args.rate))
        finally:
            service.stop()
    body = (
        "**Throughput** — SmolLM2-135M-Instruct Q4_1, one llama.cpp worker with 8 slots "
        f"(2 threads), {args.max_tokens} max tokens, temperature 0.8, no early stop (every branch "
        "runs to its end). Target ratio ≥ 0.97.\n\n" + t1 + "\n\n"
        f"**Concurrency** — replay engine at {args.rate:.0f} tokens/s per branch, one request "
        "with N branches through API → Ray pool actor → replay worker → vote; added latency = "
        f"measured wall ÷ ideal − 1. One orchestrator process sustains **{sustained} concurrent "
        "branches** within 10% added latency on this machine.\n\n" + t2
    )
    print(body)
    if not args.no_write:
        write_section(
            "Branch-parallel throughput and concurrency (issue 3)",
            body,
            f"python -m benchmarks.branches --reps {args.reps} --max-tokens {args.max_tokens} "
            f"--rate {args.rate:.0f} --words {args.words}",
        )


if __name__ == "__main__":
    main()
