"""The verifier service stopped: branches go on untrimmed; the queue drains when it is back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from benchmarks.service import REPO, replay_pool, start_service
from tts_orchestrator.state.embedded import EmbeddedRedis
from tts_orchestrator.state.schema import KeySchema

pytestmark = pytest.mark.integration

TRACES = [str(REPO / "evals/data/traces/thought-anchors_deepseek-r1-distill-llama-8b_math.jsonl")]


def _problem() -> str:
    for line in Path(TRACES[0]).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["id"] == "MATH-4682:correct_base_solution":
            return str(row["problem"])
    raise KeyError


@pytest.fixture(scope="module")
async def redis_url() -> AsyncIterator[str]:
    async with EmbeddedRedis() as redis:
        yield redis.url


async def _pending(client: aioredis.Redis) -> int:
    keys = KeySchema()
    info = await client.xpending(keys.verifier_stream, keys.verifier_group)
    return int(info["pending"])


async def _lag(client: aioredis.Redis) -> int:
    """Checks not yet delivered to any verifier (XINFO's `lag` needs Redis 7; count them)."""
    keys = KeySchema()
    groups = await client.xinfo_groups(keys.verifier_stream)
    last = groups[0]["last-delivered-id"]
    last = last.decode() if isinstance(last, bytes) else last
    return len(await client.xrange(keys.verifier_stream, f"({last}", "+"))


async def test_stopped_verifier_never_blocks_and_its_queue_drains(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pool = {**replay_pool(traces=TRACES, tokens_per_s=1500), "model_family": "deepseek_r1"}
    config = {
        "server": {"default_max_tokens": 16384},
        "pools": [pool],
        "redis": {"url": redis_url},
        "trim": {"default": True},
        "ray": {"num_cpus": 2},
    }
    service = await asyncio.to_thread(start_service, config, tmp_path_factory.mktemp("verifier"))
    client = aioredis.Redis.from_url(redis_url)
    body = {
        "model": "replay",
        "messages": [{"role": "user", "content": _problem()}],
        "tts": {"seed": 0},
    }
    try:
        async with httpx.AsyncClient(base_url=service.url, timeout=120) as http:
            pid = (await http.get("/v1/pools")).json()["verifiers"][0]["pid"]
            os.kill(pid, signal.SIGSTOP)  # frozen: takes no checks
            start = time.monotonic()
            r = (await http.post("/v1/chat/completions", json=body)).json()
            untrimmed_s = time.monotonic() - start
            record = (await http.get(f"/v1/requests/{r['id']}")).json()
            assert record["status"] == "finished"
            assert record["trims"] is None
            assert "\\boxed{19}" in r["choices"][0]["message"]["content"]
            assert untrimmed_s < 30
            waiting = await _lag(client) + await _pending(client)
            assert waiting > 5  # the branch's checks are queued, not lost
            os.kill(pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while await _lag(client) + await _pending(client) > 0:
                assert time.monotonic() < deadline, "the verifier queue did not drain"
                await asyncio.sleep(0.2)

            # Killed outright: Ray restarts the actor, the service starts it again, and checks
            # it had taken but not acknowledged are claimed by the new incarnation.
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while True:
                verifiers = (await http.get("/v1/pools")).json()["verifiers"]
                if verifiers and verifiers[0].get("running") and verifiers[0]["pid"] != pid:
                    break
                assert time.monotonic() < deadline, verifiers
                await asyncio.sleep(0.5)
            r = (await http.post("/v1/chat/completions", json=body)).json()
            record = (await http.get(f"/v1/requests/{r['id']}")).json()
            assert record["trims"]["interventions"][0]["rule"] == "overthinking"
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        await client.aclose()
        service.stop()
