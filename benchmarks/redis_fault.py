"""Kill -9 the embedded Redis under load, then restart the whole service (issue 14).

The real service (API, local Ray, replay engine streaming real recorded traces) runs on its
default state store: the private, supervised redis-server with its append-only file (fsync every
second) in a data directory, API keys on. An API key is made with the CLI while the service is
down (it opens the data directory), then:

1. ``--concurrency`` closed-loop clients stream chat completions with that key;
2. after ``--before-s`` seconds the redis-server (its pid from ``/health``) gets SIGKILL;
3. the clients go on for ``--after-s`` seconds; every request is classified as in
   ``benchmarks.load`` (completed, failed cleanly = an OpenAI error body or an SSE error event
   then ``[DONE]``, failed otherwise, hung);
4. measured: the requests in flight at the kill and their outcomes, the time until a request
   started after the kill completes, what ``/health`` says (restarts, downtime), whether the dead
   server was reaped, whether the key still works, and whether every request record written at
   least ``FSYNC_MARGIN_S`` before the kill is still there (``appendfsync everysec`` promises
   at most about a second of loss; Redis documents up to two in the worst case);
5. the service is stopped and started again on the same data directory: the key and the same
   records again.

Run: ``.venv/bin/python -m benchmarks.redis_fault`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from benchmarks.common import write_section
from benchmarks.load import TRACES, LoadPlan, Outcome, RequestResult, long_problems, stream_one
from benchmarks.service import RunningService, replay_pool, start_service

FSYNC_MARGIN_S = 2.0
PEPPER = "redis-fault-benchmark"


@dataclass
class Timed:
    """One request, its times relative to the kill (negative: before it)."""

    started_s: float
    result: RequestResult

    @property
    def ended_s(self) -> float:
        return self.started_s + self.result.total_s

    @property
    def in_flight_at_kill(self) -> bool:
        return self.started_s < 0 < self.ended_s


@dataclass
class Survival:
    """What was still there after a fault: the key and the records written before it."""

    key_status: int
    records_found: int
    records_checked: int


@dataclass
class FaultRun:
    requests: list[Timed]
    killed_pid: int
    killed_reaped: bool
    health: dict[str, Any]
    after_kill: Survival
    after_restart: Survival | None = None
    durable_ids: list[str] = field(default_factory=list)

    @property
    def in_flight(self) -> list[Timed]:
        return [t for t in self.requests if t.in_flight_at_kill]

    def first_served_after_kill(self) -> Timed | None:
        """The first request started after the kill that completed (by when it completed)."""
        served = [
            t for t in self.requests if t.started_s >= 0 and t.result.outcome is Outcome.COMPLETED
        ]
        return min(served, key=lambda t: t.ended_s, default=None)


def service_config(data_dir: Path, *, rate: float, max_tokens: int) -> dict[str, Any]:
    return {
        "server": {"max_tokens_cap": max(max_tokens, 4096)},
        "pools": [replay_pool(traces=[str(p) for p in TRACES], tokens_per_s=rate)],
        "redis": {"data_dir": str(data_dir), "socket_timeout_s": 0.5},
        "ray": {"num_cpus": 2},
        "security": {"enabled": True, "pepper": PEPPER},
    }


def create_key(config: dict[str, Any], workdir: Path) -> str:
    """A key made with the CLI, as an operator would (here: while the service is down)."""
    path = workdir / "keys-config.yaml"
    path.write_text(yaml.safe_dump(config))
    created = subprocess.run(
        [sys.executable, "-m", "tts_orchestrator", "keys", "create", "--name", "fault",
         "--rpm", "0", "--concurrency", "0", "-c", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return created.stdout.strip()


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def embedded_status(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    r = await http.get(f"{url}/health", timeout=10)
    status: dict[str, Any] = r.json()["checks"]["redis_embedded"]
    return status


async def survival(
    http: httpx.AsyncClient, url: str, key: str, ids: list[str], body: dict[str, Any]
) -> Survival:
    probe = await http.post(
        f"{url}/v1/chat/completions", json={**body, "stream": False}, headers=_auth(key)
    )
    found = 0
    for request_id in ids:
        r = await http.get(f"{url}/v1/requests/{request_id}", headers=_auth(key), timeout=10)
        found += r.status_code == 200
    return Survival(probe.status_code, found, len(ids))


def _load_plan(service: RunningService, *, rate: float, max_tokens: int) -> LoadPlan:
    """Streamed chat completions of exactly `max_tokens` over real recorded problems."""
    return LoadPlan(
        url=service.url,
        rate=rate,
        max_tokens=max_tokens,
        problems=long_problems(max_tokens),
        stall_s=15.0,
    )


def _reaped(pid: int) -> bool:
    """Gone from the process table (a zombie would still be listed, in state Z)."""
    return not Path(f"/proc/{pid}").exists()


async def kill_under_load(
    service: RunningService,
    key: str,
    *,
    concurrency: int,
    before_s: float,
    after_s: float,
    rate: float,
    max_tokens: int,
) -> FaultRun:
    plan = _load_plan(service, rate=rate, max_tokens=max_tokens)
    url = f"{service.url}/v1/chat/completions"
    timed: list[tuple[float, RequestResult]] = []
    stop = asyncio.Event()
    timeout = httpx.Timeout(connect=10.0, read=plan.stall_s, write=10.0, pool=None)
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=_auth(key)) as http:
        victim = int((await embedded_status(http, service.url))["pid"])

        async def client(i: int) -> None:
            rng = random.Random(i)
            while not stop.is_set():
                started = time.monotonic()
                result = await stream_one(http, url, plan.body(rng), deadline_s=plan.deadline_s)
                timed.append((started, result))

        tasks = [asyncio.create_task(client(i)) for i in range(concurrency)]
        await asyncio.sleep(before_s)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(after_s)
        stop.set()
        await asyncio.gather(*tasks)
        requests = [Timed(started - killed_at, result) for started, result in timed]
        durable = [
            t.result.response_id
            for t in requests
            if t.result.outcome is Outcome.COMPLETED and t.ended_s <= -FSYNC_MARGIN_S
        ]
        health = await embedded_status(http, service.url)
        kept = await survival(http, service.url, key, durable, plan.body(random.Random(0)))
    return FaultRun(
        requests=requests,
        killed_pid=victim,
        killed_reaped=_reaped(victim),
        health=health,
        after_kill=kept,
        durable_ids=durable,
    )


async def after_service_restart(
    service: RunningService, key: str, run: FaultRun, *, rate: float, max_tokens: int
) -> Survival:
    plan = _load_plan(service, rate=rate, max_tokens=max_tokens)
    async with httpx.AsyncClient(timeout=60) as http:
        return await survival(http, service.url, key, run.durable_ids, plan.body(random.Random(1)))


def report(run: FaultRun, *, concurrency: int, rate: float, max_tokens: int) -> str:
    def outcomes(items: list[Timed]) -> str:
        counts = Counter(t.result.outcome for t in items)
        return ", ".join(f"{counts[o]} {o.value}" for o in Outcome)

    first = run.first_served_after_kill()
    served = (
        f"started +{first.started_s:.2f} s, completed +{first.ended_s:.2f} s"
        if first is not None
        else "none within the run"
    )
    h = run.health
    rows = [
        "| embedded Redis killed (SIGKILL) under load | value |",
        "|---|---|",
        f"| load | {concurrency} streaming clients, replay engine at {rate:g} tokens/s, "
        f"`max_tokens={max_tokens}`, an API key on every request |",
        f"| requests in flight at the kill | {len(run.in_flight)}: {outcomes(run.in_flight)} |",
        f"| all requests of the run | {len(run.requests)}: {outcomes(run.requests)} |",
        f"| first request started after the kill to complete | {served} |",
        f"| `/health` after | restarts {h['restarts']}, down {h['last_down_s']} s, "
        f"last exit: {h['last_exit']}, same port |",
        f"| killed server reaped (no zombie) | {'yes' if run.killed_reaped else 'NO'} |",
        f"| key made before the kill, after it | HTTP {run.after_kill.key_status} |",
        f"| records completed ≥ {FSYNC_MARGIN_S:g} s before the kill, found after it | "
        f"{run.after_kill.records_found} / {run.after_kill.records_checked} |",
    ]
    if run.after_restart is not None:
        rows += [
            f"| after a service restart on the same data dir: the key | "
            f"HTTP {run.after_restart.key_status} |",
            f"| after a service restart: those records | {run.after_restart.records_found} / "
            f"{run.after_restart.records_checked} |",
        ]
    return "\n".join(rows)


async def run_all(args: argparse.Namespace, workdir: Path) -> FaultRun:
    data_dir = workdir / "redis"
    config = service_config(data_dir, rate=args.rate, max_tokens=args.max_tokens)
    key = await asyncio.to_thread(create_key, config, workdir)
    service = await asyncio.to_thread(start_service, config, workdir / "first")
    try:
        run = await kill_under_load(
            service,
            key,
            concurrency=args.concurrency,
            before_s=args.before_s,
            after_s=args.after_s,
            rate=args.rate,
            max_tokens=args.max_tokens,
        )
    finally:
        await asyncio.to_thread(service.stop)
    again = await asyncio.to_thread(start_service, config, workdir / "second")
    try:
        run.after_restart = await after_service_restart(
            again, key, run, rate=args.rate, max_tokens=args.max_tokens
        )
    finally:
        await asyncio.to_thread(again.stop)
    return run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--before-s", type=float, default=6.0, help="load before the kill")
    ap.add_argument("--after-s", type=float, default=8.0, help="load after the kill")
    ap.add_argument("--rate", type=float, default=200.0, help="replay tokens/s per stream")
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--no-write", action="store_true", help="print only")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for sub in ("first", "second"):
            (Path(tmp) / sub).mkdir()
        run = asyncio.run(run_all(args, Path(tmp)))
    body = report(run, concurrency=args.concurrency, rate=args.rate, max_tokens=args.max_tokens)
    print(body)
    if not args.no_write:
        write_section(
            "Embedded Redis killed under load (issue 14)",
            body,
            f"python -m benchmarks.redis_fault --concurrency {args.concurrency} "
            f"--before-s {args.before_s:g} --after-s {args.after_s:g} --rate {args.rate:g} "
            f"--max-tokens {args.max_tokens}",
        )


if __name__ == "__main__":
    main()
