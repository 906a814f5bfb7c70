from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from benchmarks.service import REPO, RunningService, cpu_pool, replay_pool, start_service
from tts_orchestrator.security.keys import SecurityKeySchema
from tts_orchestrator.state.embedded import EmbeddedRedis
from tts_orchestrator.state.schema import KeySchema

VOTE_TRACES = str(REPO / "tests" / "data" / "vote_traces.jsonl")


@pytest.fixture(scope="session")
def cpu_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The real service on the CPU default: llama.cpp + SmolLM2, private Redis, local Ray."""
    workdir = tmp_path_factory.mktemp("cpu-service")
    config = {
        "server": {"default_max_tokens": 64},
        "pools": [cpu_pool()],
        "ray": {"num_cpus": 2},
    }
    service = start_service(config, workdir)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def replay_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The real service (Redis, Ray) on the replay engine over hand-made vote traces."""
    workdir = tmp_path_factory.mktemp("replay-service")
    config = {
        "server": {"default_max_tokens": 4096},
        "pools": [replay_pool(traces=[VOTE_TRACES], tokens_per_s=400)],
        "ray": {"num_cpus": 2},
    }
    service = start_service(config, workdir)
    yield service
    service.stop()


# -- security tests: one real redis-server, two clients of it (two API replicas) ---------------
@pytest.fixture(scope="module")
async def redis_url() -> AsyncIterator[str]:
    async with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    """Two clients of one server: two API replicas."""
    pair = (
        Redis.from_url(redis_url, decode_responses=True),
        Redis.from_url(redis_url, decode_responses=True),
    )
    await pair[0].flushall()
    yield pair
    for client in pair:
        await client.aclose()


@pytest.fixture
def schema() -> SecurityKeySchema:
    return SecurityKeySchema(KeySchema(prefix=f"t{uuid.uuid4().hex[:8]}"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
