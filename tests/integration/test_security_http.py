"""The security dependencies in a small FastAPI app over a real redis-server.

The app is wired as the service should be: 401 / 429 in the OpenAI schema, the concurrency
lease held for a whole streaming response and freed on disconnect or cancel, usage charged at
the end, Redis down failing closed, and no key or prompt in the logs of a request.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncGenerator, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from integration.security_support import PEPPER, UNLIMITED, make_store
from redis.asyncio import Redis

from tts_orchestrator.api.errors import install_error_handlers
from tts_orchestrator.api.security import Admitted, Authenticated, install_security
from tts_orchestrator.api.streaming import EventStreamResponse
from tts_orchestrator.config import Settings
from tts_orchestrator.config.security import KeyLimits, SecurityConfig
from tts_orchestrator.protocol import ChatCompletionRequest, TtsOptions
from tts_orchestrator.request.shape import Caps
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
        caps = Caps.of(Settings(), auth.limits)
        if body.max_tokens is not None:
            caps.check_tokens(body.max_tokens)
        if body.tts is not None and body.tts.n_branches is not None:
            caps.check_branches(body.tts.n_branches)
        auth.charge_on_exit(usage)
        if body.user == "explode":
            TtsOptions.model_validate({"n_branches": body.messages[0].text()})
        if not body.stream:
            return {"key": auth.key_id, "max_tokens": body.max_tokens or caps.max_tokens}

        async def events() -> AsyncGenerator[str, None]:
            yield "data: {}\n\n"
            await harness.stream_gate.wait()
            yield "data: [DONE]\n\n"

        return EventStreamResponse(events())

    @app.get("/v1/whoami")
    async def whoami(auth: Authenticated) -> dict[str, Any]:
        return {"key": auth.key_id, "lease": auth.lease is not None}

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


def _assert_openai_error(r: httpx.Response, status: int, error_type: str, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json() == {
        "error": {
            "message": r.json()["error"]["message"],
            "type": error_type,
            "param": None,
            "code": code,
        }
    }


async def test_requests_without_a_valid_key_get_401(harness: _Harness) -> None:
    good = await harness.store.create("good", limits=UNLIMITED)
    revoked = await harness.store.create("gone", limits=UNLIMITED)
    await harness.store.revoke(revoked.record.id)
    forged = "tts-" + "A" * 43
    cases = [
        ({}, "missing_api_key"),
        ({"authorization": good.secret}, "invalid_authorization_header"),
        (_bearer(forged), "invalid_api_key"),
        (_bearer(good.secret[:-1]), "invalid_api_key"),
        ({"api-key": forged}, "invalid_api_key"),
        (_bearer(revoked.secret), "revoked_api_key"),
    ]
    async with _http(harness.app) as http:
        for headers, code in cases:
            for r in (
                await http.post("/v1/chat/completions", json=_chat(), headers=headers),
                await http.get("/v1/whoami", headers=headers),
            ):
                _assert_openai_error(r, 401, "authentication_error", code)
                assert r.headers["www-authenticate"] == "Bearer"
                assert good.secret[4:] not in r.text
        for headers in (_bearer(good.secret), {"api-key": good.secret}):
            r = await http.post("/v1/chat/completions", json=_chat(), headers=headers)
            assert r.status_code == 200 and r.json()["key"] == good.record.id
        r = await http.get("/v1/whoami", headers=_bearer(good.secret))
        assert r.json() == {"key": good.record.id, "lease": False}


async def test_rate_limited_requests_get_429_with_retry_after(harness: _Harness) -> None:
    key = await harness.store.create("rl", limits=KeyLimits(requests_per_minute=2))
    async with _http(harness.app) as http:
        for _ in range(2):
            r = await http.post("/v1/chat/completions", json=_chat(), headers=_bearer(key.secret))
            assert r.status_code == 200
        r = await http.post("/v1/chat/completions", json=_chat(), headers=_bearer(key.secret))
        _assert_openai_error(r, 429, "rate_limit_error", "rate_limit_exceeded")
        assert 1 <= int(r.headers["retry-after"]) <= 60
        # Authentication alone is not rate limited.
        assert (await http.get("/v1/whoami", headers=_bearer(key.secret))).status_code == 200


async def test_per_key_caps_shape_the_request(harness: _Harness) -> None:
    key = await harness.store.create("caps", limits=KeyLimits(max_tokens=64, max_branches=2))
    async with _http(harness.app) as http:
        r = await http.post("/v1/chat/completions", json=_chat(), headers=_bearer(key.secret))
        assert r.json()["max_tokens"] == 64
        r = await http.post(
            "/v1/chat/completions", json=_chat(max_tokens=65), headers=_bearer(key.secret)
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        r = await http.post(
            "/v1/chat/completions",
            json=_chat(tts={"n_branches": 3}),
            headers=_bearer(key.secret),
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "tts.n_branches"
    # Refused and served requests alike released their slots; only the served one was charged.
    assert await harness.limiter.in_flight(key.record.id) == 0
    assert await harness.limiter.spent_today(key.record.id) == harness.tokens_per_request


async def test_a_stream_holds_its_lease_until_it_ends(harness: _Harness) -> None:
    key = await harness.store.create("stream", limits=KeyLimits(max_concurrent=1))
    headers = _bearer(key.secret)
    async with _http(harness.app) as http:
        streaming = asyncio.create_task(
            http.post("/v1/chat/completions", json=_chat(stream=True), headers=headers)
        )
        await asyncio.sleep(0.2)  # the route has returned; the stream is open
        assert not streaming.done()
        assert await harness.limiter.in_flight(key.record.id) == 1
        assert await harness.limiter.spent_today(key.record.id) == 0
        r = await http.post("/v1/chat/completions", json=_chat(), headers=headers)
        _assert_openai_error(r, 429, "rate_limit_error", "concurrency_limit_exceeded")
        harness.stream_gate.set()
        r = await streaming
        assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
        assert await harness.limiter.in_flight(key.record.id) == 0
        assert await harness.limiter.spent_today(key.record.id) == harness.tokens_per_request
        r = await http.post("/v1/chat/completions", json=_chat(), headers=headers)
        assert r.status_code == 200


async def _asgi_stream_then_disconnect(app: FastAPI, secret: str, *, after_s: float) -> int:
    """Drive the app as a server would, with a client that goes away mid-stream."""
    body = json.dumps(_chat(stream=True)).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {secret}".encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
        "state": {},
    }
    sent_body = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(after_s)
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    async with asyncio.timeout(5):
        await app(scope, receive, send)
    return status[0]


async def test_a_client_that_disconnects_mid_stream_frees_its_slot(harness: _Harness) -> None:
    key = await harness.store.create("gone", limits=KeyLimits(max_concurrent=1))
    assert await _asgi_stream_then_disconnect(harness.app, key.secret, after_s=0.2) == 200
    assert not harness.stream_gate.is_set()  # the stream never finished on its own
    assert await harness.limiter.in_flight(key.record.id) == 0
    assert await harness.limiter.spent_today(key.record.id) == harness.tokens_per_request


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
    assert r.status_code == 503 and r.json()["error"]["type"] == "service_unavailable"


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
    assert "request body" in text and "unhandled error" in text and "Traceback" in text
    assert "first message, bare" in text
    assert key.secret[4:] not in text and key.secret[4:20] not in text
    assert (prompt in text) is log_prompts
    assert ("17 * 23" in text) is log_prompts
