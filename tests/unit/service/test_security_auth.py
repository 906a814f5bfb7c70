"""Pure parts of the gate: headers, per-key caps, error responses, auth switched off."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from tts_orchestrator.api.errors import install_error_handlers
from tts_orchestrator.api.security import Admitted, Authenticated, install_security
from tts_orchestrator.config.security import SecurityConfig
from tts_orchestrator.security.auth import Gatekeeper, api_key_from_headers
from tts_orchestrator.security.errors import AuthenticationError, LimitKind, RateLimited
from tts_orchestrator.security.limits import utc_day

KEY = "tts-" + "k" * 43


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"authorization": f"Bearer {KEY}"}, KEY, id="bearer"),
        pytest.param({"authorization": f"bearer   {KEY} "}, KEY, id="bearer-lowercase-spaces"),
        pytest.param({"api-key": KEY}, KEY, id="api-key-header"),
        pytest.param({"authorization": f"Bearer {KEY}", "api-key": "other"}, KEY, id="bearer-wins"),
    ],
)
def test_the_key_is_read_from_bearer_or_api_key(headers: dict[str, str], expected: str) -> None:
    assert api_key_from_headers(headers) == expected


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "missing_api_key", id="none"),
        pytest.param({"api-key": "  "}, "missing_api_key", id="blank-api-key"),
        pytest.param({"authorization": KEY}, "invalid_authorization_header", id="no-scheme"),
        pytest.param({"authorization": f"Basic {KEY}"}, "invalid_authorization_header", id="basic"),
        pytest.param({"authorization": "Bearer "}, "invalid_authorization_header", id="no-token"),
    ],
)
def test_missing_or_malformed_credentials_are_401(headers: dict[str, str], code: str) -> None:
    with pytest.raises(AuthenticationError) as info:
        api_key_from_headers(headers)
    assert info.value.status_code == 401
    assert info.value.code == code
    assert KEY not in info.value.message


@pytest.mark.parametrize(
    ("retry_after_s", "header"),
    [
        pytest.param(0.0, "1", id="never-zero"),
        pytest.param(0.2, "1", id="rounds-up"),
        pytest.param(1.0, "1", id="whole"),
        pytest.param(59.01, "60", id="ceil"),
    ],
)
def test_retry_after_is_whole_seconds_rounded_up(retry_after_s: float, header: str) -> None:
    exc = RateLimited("slow down", kind=LimitKind.RATE, retry_after_s=retry_after_s)
    assert exc.headers() == {"Retry-After": header}
    assert (exc.status_code, exc.error_type, exc.code) == (
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
    )


@pytest.mark.parametrize(
    ("moment", "day", "left_s"),
    [
        pytest.param(dt.datetime(2026, 3, 1, 0, 0, 0), "2026-03-01", 86400.0, id="midnight"),
        pytest.param(dt.datetime(2026, 3, 1, 23, 59, 30), "2026-03-01", 30.0, id="late"),
        pytest.param(dt.datetime(2028, 2, 28, 12, 0, 0), "2028-02-28", 43200.0, id="leap-year"),
    ],
)
def test_budgets_reset_at_utc_midnight(moment: dt.datetime, day: str, left_s: float) -> None:
    assert utc_day(moment.replace(tzinfo=dt.UTC).timestamp()) == (day, left_s)


@dataclass(frozen=True)
class _Services:
    security: Gatekeeper


class _Echo(BaseModel):
    text: str


def _app(config: SecurityConfig) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install_security(app, config)
    app.state.services = _Services(security=Gatekeeper(config))

    @app.post("/v1/echo")
    async def echo(body: _Echo, auth: Admitted) -> dict[str, object]:
        return {"text": body.text, "key": auth.key_id, "lease": auth.lease is not None}

    @app.get("/v1/whoami")
    async def whoami(auth: Authenticated) -> dict[str, object]:
        return {"key": auth.key_id}

    @app.get("/v1/limited")
    async def limited() -> None:
        raise RateLimited("too many", kind=LimitKind.CONCURRENCY, retry_after_s=2.5)

    @app.get("/v1/denied")
    async def denied() -> None:
        raise AuthenticationError("Invalid API key.", code="invalid_api_key")

    return app


async def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_disabled_auth_is_a_no_op() -> None:
    async with await _client(_app(SecurityConfig())) as client:
        r = await client.post("/v1/echo", json={"text": "hi"})
        assert r.status_code == 200
        assert r.json() == {"text": "hi", "key": None, "lease": False}
        r = await client.get("/v1/whoami", headers={"authorization": "Bearer nonsense"})
        assert r.status_code == 200
        assert r.json() == {"key": None}


async def test_security_errors_use_the_openai_schema_and_set_headers() -> None:
    async with await _client(_app(SecurityConfig())) as client:
        r = await client.get("/v1/limited")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "3"
        assert r.json() == {
            "error": {
                "message": "too many",
                "type": "rate_limit_error",
                "param": None,
                "code": "concurrency_limit_exceeded",
            }
        }
        r = await client.get("/v1/denied")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("origins", "allowed"),
    [
        pytest.param([], None, id="off-by-default"),
        pytest.param(["https://app.example"], "https://app.example", id="listed-origin"),
    ],
)
async def test_cors_is_off_unless_origins_are_listed(
    origins: list[str], allowed: str | None
) -> None:
    async with await _client(_app(SecurityConfig(cors_origins=origins))) as client:
        r = await client.options(
            "/v1/echo",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization",
            },
        )
        assert r.headers.get("access-control-allow-origin") == allowed
        r = await client.options(
            "/v1/echo",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        assert r.headers.get("access-control-allow-origin") is None


def test_an_enabled_gatekeeper_needs_its_stores() -> None:
    with pytest.raises(ValueError, match="key store"):
        Gatekeeper(SecurityConfig(enabled=True))
