"""Two API replicas share one Redis: a cancel sent to B stops branches started on A."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from integration.conftest import VOTE_TRACES

from benchmarks.service import RunningService, replay_pool, start_service
from tts_orchestrator.config import RedisConfig
from tts_orchestrator.state.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def shared_redis() -> AsyncIterator[str]:
    async with EmbeddedRedis() as redis:
        yield redis.url


@pytest.fixture(scope="module")
def replicas(
    shared_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[RunningService]]:
    config = {
        "pools": [replay_pool(traces=[VOTE_TRACES], tokens_per_s=100)],
        "redis": RedisConfig(url=shared_redis).model_dump(),
        "ray": {"num_cpus": 1},
    }
    services = [start_service(config, tmp_path_factory.mktemp(f"replica-{i}")) for i in range(2)]
    yield services
    for s in services:
        s.stop()


def test_cancel_on_replica_b_stops_request_on_replica_a(replicas: list[RunningService]) -> None:
    a, b = replicas
    body = {
        "model": "replay",
        "messages": [{"role": "user", "content": "VOTE-SLOW: what is eight?"}],
        "stream": True,
        "tts": {"n_branches": 4, "seed": 1},  # branches 1..3 run long
    }
    with httpx.stream("POST", f"{a.url}/v1/chat/completions", json=body, timeout=60) as r:
        lines = (ln for ln in r.iter_lines() if ln.startswith("data:"))
        request_id = json.loads(next(lines)[5:])["id"]
        record = httpx.get(f"{b.url}/v1/requests/{request_id}").json()  # B reads A's record
        assert record["status"] == "running"
        assert len(record["branches"]) == 4
        assert httpx.delete(f"{b.url}/v1/requests/{request_id}", timeout=10).json()["cancelled"]
        rest = list(lines)
    assert "cancelled" in rest[-2]
    assert rest[-1] == "data: [DONE]"
    record = httpx.get(f"{b.url}/v1/requests/{request_id}").json()
    assert record["status"] == "cancelled"
    assert record["replica_id"]
    assert all(br["aborted"] for br in record["branches"])
