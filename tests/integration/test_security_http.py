"""The security dependencies in a small FastAPI app over a real redis-server: what is hard to
provoke on the real service (a request task cancelled under the app, Redis down for good, an
exception inside a route with a key in flight) and must still hold: the slot freed, failing
closed, no key or prompt in any log line.

401, 429, the per-key caps and a stream's lease run through the real routes in
``test_security_service.py``.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from integration.security_support import PEPPER, UNLIMITED, make_store
from redis.asyncio import Redis

from tts_orchestrator.api.errors import install_error_handlers
from tts_orchestrator.api.security import Admitted, install_security
from tts_orchestrator.api.streaming import EventStreamResponse
from tts_orchestrator.config.security import KeyLimits, SecurityConfig
from tts_orchestrator.protocol import ChatCompletionRequest, TtsOptions
from tts_orchestrator.security.auth import Gatekeeper
from tts_orchestrator.security.keys import ApiKeyStore, SecurityKeySchema
from tts_orchestrator.security.limits import Limiter
from tts_orchestrator.security.redaction import install_redaction, mark_sensitive
from tts_orchestrator.state.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


# --- HTTP ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Services:
    security: Gatekeeper


@dataclass
class _Harness:
    app: FastAPI
    gate: Gatekeeper
    store: ApiKeyStore
    limiter: Limiter
    stream_gate: asyncio.Event
    tokens_per_request: int = 25


log = logging.getLogger("tests.security.app")


def _build_app(client: Redis, schema: SecurityKeySchema, *, log_prompts: bool = False) -> _Harness:
    config = SecurityConfig(enabled=True, pepper=PEPPER, lease_ttl_s=5.0, log_prompts=log_prompts)
    gate = Gatekeeper.over_redis(config, client, schema=schema.base)
    app = FastAPI()
    install_error_handlers(app)
    install_security(app, config)
    app.state.services = _Services(security=gate)
    harness = _Harness(
        app=app,
        gate=gate,
        store=make_store(client, schema),
        limiter=Limiter(client, keys=schema),
        stream_gate=asyncio.Event(),
    )

    async def usage() -> int:
        return harness.tokens_per_request

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest, auth: Admitted) -> Any:
        mark_sensitive(*(m.text() for m in body.messages))
        log.info("request body: %s", body.model_dump())
        log.debug("first message, bare: %s", body.messages[0].text())  # only the mark hides it
        auth.charge_on_exit(usage)
        if body.user == "explode":
            TtsOptions.model_validate({"n_branches": body.messages[0].text()})
        if not body.stream:
            return {"key": auth.key_id, "max_tokens": body.max_tokens}

        async def events() -> AsyncGenerator[str, None]:
            yield "data: {}\n\n"
            await harness.stream_gate.wait()
            yield "data: [DONE]\n\n"

        return EventStreamResponse(events())

    return harness


@pytest.fixture
def harness(clients: tuple[Redis, Redis], schema: SecurityKeySchema) -> _Harness:
    return _build_app(clients[0], schema)


def _http(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def _chat(prompt: str = "hello there", **fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}], **fields}


def _bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def test_a_cancelled_request_frees_its_slot(harness: _Harness) -> None:
    key = await harness.store.create("cancel", limits=KeyLimits(max_concurrent=1))
    async with _http(harness.app) as http:
        task = asyncio.create_task(
            http.post("/v1/chat/completions", json=_chat(stream=True), headers=_bearer(key.secret))
        )
        await asyncio.sleep(0.2)
        assert await harness.limiter.in_flight(key.record.id) == 1
        task.cancel()  # e.g. the server shutting down
        with pytest.raises(asyncio.CancelledError):
            await task
    for _ in range(50):
        if await harness.limiter.in_flight(key.record.id) == 0:
            break
        await asyncio.sleep(0.02)
    assert await harness.limiter.in_flight(key.record.id) == 0


async def test_redis_down_fails_closed(schema: SecurityKeySchema) -> None:
    async with EmbeddedRedis() as server:
        client = Redis.from_url(server.url, decode_responses=True, socket_timeout=0.5)
        harness = _build_app(client, schema)
        key = await harness.store.create("x", limits=UNLIMITED)
        await server.stop(kill=True)
        async with _http(harness.app) as http:
            r = await http.post("/v1/chat/completions", json=_chat(), headers=_bearer(key.secret))
        await client.aclose()
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "service_unavailable"


# --- logs ------------------------------------------------------------------------------------


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Everything logged anywhere, formatted with tracebacks, as a production handler would."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("log_prompts", [False, True], ids=["default", "log-prompts"])
async def test_no_key_or_prompt_reaches_the_logs(
    clients: tuple[Redis, Redis],
    schema: SecurityKeySchema,
    all_logs: io.StringIO,
    log_prompts: bool,
) -> None:
    harness = _build_app(clients[0], schema, log_prompts=log_prompts)
    key = await harness.store.create("logs", limits=UNLIMITED)
    prompt = "My secret plan: compute 17 * 23 and tell nobody"
    uninstall = install_redaction(log_prompts=log_prompts)
    try:
        async with _http(harness.app) as http:
            ok = await http.post(
                "/v1/chat/completions", json=_chat(prompt), headers=_bearer(key.secret)
            )
            boom = await http.post(
                "/v1/chat/completions",
                json=_chat(prompt, user="explode"),
                headers={"api-key": key.secret},
            )
            denied = await http.post(
                "/v1/chat/completions", json=_chat(prompt), headers=_bearer(key.secret[:-2] + "zz")
            )
    finally:
        uninstall()
    assert (ok.status_code, boom.status_code, denied.status_code) == (200, 500, 401)
    text = all_logs.getvalue()
    assert "request body" in text
    assert "unhandled error" in text
    assert "Traceback" in text
    assert "first message, bare" in text
    assert key.secret[4:] not in text
    assert key.secret[4:20] not in text
    assert (prompt in text) is log_prompts
    assert ("17 * 23" in text) is log_prompts
