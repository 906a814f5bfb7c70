"""Faults: a worker killed mid-stream, Redis restarted under load, the pool actor killed,
graceful shutdown. Each runs the real service with real workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from integration.conftest import VOTE_TRACES

from benchmarks.service import RunningService, cpu_pool, replay_pool, start_service
from tts_orchestrator.config import RedisConfig
from tts_orchestrator.state.embedded import EmbeddedRedis
from tts_orchestrator.state.records import RecordStatus
from tts_orchestrator.state.redis_store import RedisStateStore

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
LONG = [{"role": "user", "content": "Write a long story about a brave knight and a dragon."}]


def pools(service: RunningService) -> list[dict]:  # type: ignore[type-arg]
    return list(httpx.get(f"{service.url}/v1/pools", timeout=10).json()["data"])


def wait_healthy(service: RunningService, within_s: float = 90) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{service.url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"not healthy within {within_s}s:\n{service.log_tail()}")


@pytest.fixture(scope="module")
def two_worker_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    config = {
        "server": {"default_max_tokens": 64},
        "pools": [cpu_pool(replicas=2, n_parallel=2, threads=1)],
        "ray": {"num_cpus": 2},
    }
    service = start_service(config, tmp_path_factory.mktemp("two-workers"))
    yield service
    service.stop()


def test_killed_worker_leaves_branches_on_the_other_worker(
    two_worker_service: RunningService,
) -> None:
    s = two_worker_service
    processes = pools(s)[0]["processes"]
    assert len(processes) == 2
    victim = int(processes[0]["pid"])
    body = {
        "model": MODEL,
        "messages": LONG,
        "max_tokens": 160,
        "stream": True,
        "tts": {"n_branches": 4, "aggregation": "weighted", "seed": 3},
    }
    final = None
    with httpx.stream("POST", f"{s.url}/v1/chat/completions", json=body, timeout=120) as r:
        n = 0
        for line in r.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            n += 1
            if n == 3:
                os.kill(victim, signal.SIGKILL)
            event = json.loads(line[5:])
            assert "error" not in event, event
            if event.get("tts"):
                final = event["tts"]
    assert final is not None
    failed = [
        b for b in final["branches"] if b["abort_reason"] and "fail" in b["abort_reason"].lower()
    ]
    finished = [b for b in final["branches"] if b["finish_reason"]]
    assert len(failed) == 2, final["branches"]
    assert len(finished) == 2, final["branches"]
    wait_healthy(s)
    assert all(p["running"] for p in pools(s)[0]["processes"])


@pytest.fixture(scope="module")
def ray_path_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """Tokens through the pool actor (`direct_stream: false`), as across nodes."""
    pool = {**cpu_pool(n_parallel=2, threads=1), "direct_stream": False}
    config = {"server": {"default_max_tokens": 64}, "pools": [pool], "ray": {"num_cpus": 2}}
    service = start_service(config, tmp_path_factory.mktemp("ray-path"))
    yield service
    service.stop()


def _served_after_restart(s: RunningService, actor_pid: int) -> None:
    deadline = time.monotonic() + 60
    while True:  # Ray restarts the actor; the next request is served by the new one
        r2 = httpx.post(
            f"{s.url}/v1/chat/completions",
            timeout=60,
            json={"model": MODEL, "messages": LONG, "max_tokens": 8},
        )
        if r2.status_code == 200:
            break
        assert r2.status_code in (502, 503), r2.text
        assert time.monotonic() < deadline, r2.text
        time.sleep(1)
    assert int(pools(s)[0]["actor_pid"]) != actor_pid


def _stream_and_kill_actor(s: RunningService) -> tuple[int, list[str], float]:
    wait_healthy(s)
    actor_pid = int(pools(s)[0]["actor_pid"])
    body = {"model": MODEL, "messages": LONG, "max_tokens": 400, "stream": True}
    with httpx.stream("POST", f"{s.url}/v1/chat/completions", json=body, timeout=60) as r:
        lines = (ln for ln in r.iter_lines() if ln.startswith("data:"))
        next(lines)
        os.kill(actor_pid, signal.SIGKILL)
        started = time.monotonic()
        rest = list(lines)
    return actor_pid, rest, time.monotonic() - started


def test_killed_pool_actor_fails_the_ray_path_cleanly_and_comes_back(
    ray_path_service: RunningService,
) -> None:
    s = ray_path_service
    assert pools(s)[0]["data_path"] == "ray"
    actor_pid, rest, took_s = _stream_and_kill_actor(s)
    assert took_s < 15
    assert '"error"' in rest[-2]
    assert rest[-1] == "data: [DONE]"
    _served_after_restart(s, actor_pid)


def test_killed_pool_actor_does_not_interrupt_direct_streams(
    two_worker_service: RunningService,
) -> None:
    s = two_worker_service
    assert pools(s)[0]["data_path"] == "direct"
    actor_pid, rest, _ = _stream_and_kill_actor(s)
    # The worker streams straight to the API process: losing the actor loses no tokens.
    assert rest[-1] == "data: [DONE]"
    events = [json.loads(ln[5:]) for ln in rest[:-1]]
    assert not any("error" in e for e in events), events[-1]
    assert any(c.get("finish_reason") for e in events for c in e.get("choices", []))
    _served_after_restart(s, actor_pid)
    status = pools(s)[0]  # the old actor's lease died with it; the new one counts from zero
    assert status["inflight_requests"] == 0
    assert [w["load"] for w in status["workers"]] == [0, 0]


@pytest.fixture(scope="module")
async def external_redis() -> AsyncIterator[EmbeddedRedis]:
    async with EmbeddedRedis() as redis:
        yield redis


async def _stream_events(http: httpx.AsyncClient, url: str) -> list[str]:
    body = {
        "model": "replay",
        "messages": [{"role": "user", "content": "VOTE-TIE: pick a number."}],
        "stream": True,
    }
    events: list[str] = []
    async with http.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        events += [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    return events


async def test_redis_restart_under_load(
    external_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = {
        "pools": [replay_pool(traces=[VOTE_TRACES], tokens_per_s=400)],
        "redis": {"url": external_redis.url, "socket_timeout_s": 0.5},
        "ray": {"num_cpus": 1},
    }
    service = await asyncio.to_thread(
        start_service, config, tmp_path_factory.mktemp("redis-restart")
    )
    outcomes: dict[str, int] = {}
    stop = asyncio.Event()

    async def client(client_id: int, http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            body = {
                "model": "replay",
                "messages": [{"role": "user", "content": "VOTE-TIE: pick a number."}],
                "tts": {"n_branches": 2, "seed": client_id},
            }
            start = time.monotonic()
            r = await http.post(f"{service.url}/v1/chat/completions", json=body, timeout=30)
            took = time.monotonic() - start
            assert took < 10, f"request took {took:.1f}s"
            key = str(r.status_code)
            if r.status_code != 200:
                assert r.json()["error"]["type"] == "service_unavailable"
            outcomes[key] = outcomes.get(key, 0) + 1
            await asyncio.sleep(0.05)

    try:
        async with httpx.AsyncClient() as http:
            tasks = [asyncio.create_task(client(i, http)) for i in range(4)]
            await asyncio.sleep(2)
            port = external_redis.port
            await external_redis.stop(kill=True)
            await asyncio.sleep(1)
            stream_events = await _stream_events(http, service.url)
            await asyncio.sleep(1)
            down = dict(outcomes)
            restarted = EmbeddedRedis(port=port)
            await restarted.start()
            back_at = time.monotonic()
            recovered_in = None
            while time.monotonic() - back_at < 10:
                r = await http.get(f"{service.url}/health", timeout=5)
                if r.status_code == 200:
                    recovered_in = time.monotonic() - back_at
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(2)
            stop.set()
            await asyncio.gather(*tasks)
            await restarted.aclose()
    finally:
        service.stop()
    assert down.get("503", 0) > 0, down
    # A stream starts before its record is written (the write overlaps the engine's start): it
    # ends with the store's error in the OpenAI schema, then [DONE].
    assert stream_events[-1] == "[DONE]", stream_events
    assert json.loads(stream_events[-2])["error"]["type"] == "service_unavailable", stream_events
    assert recovered_in is not None, recovered_in
    assert recovered_in < 5, recovered_in
    assert outcomes["200"] > down.get("200", 0), outcomes


async def test_graceful_shutdown_ends_streams_and_releases_workers(
    external_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not external_redis.running:
        await external_redis.start()
    config = {
        "server": {"shutdown_grace_s": 1.0},
        "pools": [cpu_pool()],
        "redis": {"url": external_redis.url},
        "ray": {"num_cpus": 2},
    }
    service = await asyncio.to_thread(start_service, config, tmp_path_factory.mktemp("shutdown"))
    worker_pid = int(pools(service)[0]["processes"][0]["pid"])
    body = {"model": MODEL, "messages": LONG, "max_tokens": 2000, "stream": True}
    lines: list[str] = []
    async with (
        httpx.AsyncClient() as http,
        http.stream("POST", f"{service.url}/v1/chat/completions", json=body, timeout=60) as r,
    ):
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                lines.append(line)
                if len(lines) == 3:
                    service.proc.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
    ended_in = time.monotonic() - signalled
    assert ended_in < 10, ended_in
    assert lines[-1] == "data: [DONE]"
    assert "shutting down" in lines[-2]
    request_id = json.loads(lines[0][5:])["id"]
    await asyncio.to_thread(service.proc.wait, 30)
    assert service.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(worker_pid, 0)
    store = RedisStateStore(external_redis.url, config=RedisConfig(url=external_redis.url))
    record = await store.get_request(request_id)
    await store.aclose()
    assert record.status is RecordStatus.CANCELLED
