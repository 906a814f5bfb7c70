"""API keys on the real service: keys made with the CLI, 401 without one, 429 past its rate,
and a request visible only to the key that made it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from integration.conftest import VOTE_TRACES

from benchmarks.service import replay_pool, start_service
from tts_orchestrator.state.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration

BODY = {"model": "replay", "messages": [{"role": "user", "content": "VOTE-TIE: pick a number."}]}


@pytest.fixture(scope="module")
async def redis_url() -> AsyncIterator[str]:
    async with EmbeddedRedis() as redis:
        yield redis.url


async def create_key(redis_url: str, name: str, *limits: str) -> str:
    """A key made with the CLI, as an operator would."""
    command = [sys.executable, "-m", "tts_orchestrator", "keys", "create", "--name", name]
    created = await asyncio.to_thread(
        subprocess.run,
        [*command, *limits, "--redis-url", redis_url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"TTS_SECURITY__PEPPER": "test-pepper", "PATH": "/usr/bin:/bin"},
    )
    return created.stdout.strip()


async def test_keys_guard_the_api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    security = {"enabled": True, "pepper": "test-pepper"}
    config = {
        "pools": [replay_pool(traces=[VOTE_TRACES], tokens_per_s=2000)],
        "redis": {"url": redis_url},
        "ray": {"num_cpus": 1},
        "security": security,
    }
    service = await asyncio.to_thread(start_service, config, tmp_path_factory.mktemp("secure"))
    try:
        key = await create_key(redis_url, "ci", "--rpm", "3")
        other = await create_key(redis_url, "other")
        assert key.startswith("tts-")
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            r = await http.post("/v1/chat/completions", json=BODY)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            r = await http.post(
                "/v1/chat/completions", json=BODY, headers={"Authorization": "Bearer tts-wrong"}
            )
            assert r.status_code == 401
            auth = {"Authorization": f"Bearer {key}"}
            responses = [
                await http.post("/v1/chat/completions", json=BODY, headers=auth) for _ in range(4)
            ]
            assert [r.status_code for r in responses] == [200, 200, 200, 429]
            # A request belongs to the key that made it: another key cannot see or cancel it.
            path = f"/v1/requests/{responses[0].json()['id']}"
            mine = await http.get(path, headers=auth)
            assert mine.status_code == 200 and mine.json()["owner"]
            theirs = {"Authorization": f"Bearer {other}"}
            assert (await http.get(path, headers=theirs)).status_code == 404
            assert (await http.delete(path, headers=theirs)).status_code == 404
            assert (await http.get(path)).status_code == 401
            # Refusals before any route runs are counted too.
            metrics = (await http.get("/metrics", headers=auth)).text
            assert 'tts_errors_total{type="authentication_error"} 3.0' in metrics
            assert 'tts_errors_total{type="rate_limit_error"} 1.0' in metrics
            assert (await http.get("/v1/models")).status_code == 401
            assert (await http.get("/v1/models", headers=auth)).status_code == 200
            assert (await http.get("/health")).status_code == 200
        assert key not in service.log_path.read_text()
    finally:
        service.stop()
