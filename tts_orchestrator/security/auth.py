"""The API's gate: which key is calling, and whether its limits admit the request.

Two FastAPI dependencies, both no-ops while ``security.enabled`` is false:

- :data:`Authenticated` verifies the key only (listing models, pools, request records);
- :data:`Admitted` verifies it and admits the request against the key's token budget, rate
  and concurrency limits. It is a dependency with ``yield``: FastAPI (>= 0.118) runs its exit
  after the response has been sent, so the concurrency lease is held for the whole life of a
  streaming response, and only then released and the request's tokens charged. A replica
  that dies mid-request leaves a lease that expires by itself.

The key is read from ``Authorization: Bearer <key>`` or, failing that, ``api-key: <key>``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any, Protocol, TypeVar, cast

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from redis.asyncio import Redis

from tts_orchestrator.api.errors import tts_error_body
from tts_orchestrator.exceptions import RequestError
from tts_orchestrator.protocol import ChatCompletionRequest, CompletionRequest, TtsOptions
from tts_orchestrator.security.config import SecurityConfig
from tts_orchestrator.security.errors import AuthenticationError, SecurityError
from tts_orchestrator.security.keys import (
    ApiKeyRecord,
    ApiKeyStore,
    KeyHasher,
    SecurityKeySchema,
)
from tts_orchestrator.security.limits import Lease, Limiter
from tts_orchestrator.state.base import StateStore
from tts_orchestrator.state.keys import KeySchema

log = logging.getLogger(__name__)

Body = TypeVar("Body", bound=ChatCompletionRequest | CompletionRequest)
UsageSource = Callable[[], Awaitable[int]]


def api_key_from_headers(headers: Mapping[str, str]) -> str:
    """The presented key; ``AuthenticationError`` if there is none or the header is malformed.

    ``headers`` must look names up case-insensitively (Starlette's ``Headers`` do) or use
    lower-case names.
    """
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                "Malformed Authorization header: expected `Bearer <API key>`.",
                code="invalid_authorization_header",
            )
        return token.strip()
    api_key = headers.get("api-key", "").strip()
    if api_key:
        return api_key
    raise AuthenticationError(
        "Missing API key: send `Authorization: Bearer <key>` or an `api-key` header.",
        code="missing_api_key",
    )


async def recorded_tokens(store: StateStore, request_id: str) -> int:
    """Tokens a finished request used over all its branches (what a key is charged)."""
    record = await store.get_request(request_id)
    return record.usage.total_tokens


class AuthContext:
    """Who a request is from and the slot it holds; anonymous when auth is disabled."""

    def __init__(
        self,
        key: ApiKeyRecord | None = None,
        *,
        lease: Lease | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.key = key
        self.lease = lease
        self._limiter = limiter
        self._usage: UsageSource | None = None
        self._closed = False

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else None

    @property
    def branch_cap(self) -> int | None:
        """The key's cap on branches (the planner and probes must stay within it)."""
        return self.key.limits.max_branches if self.key else None

    def capped(self, body: Body, *, default_n_branches: int, default_max_tokens: int) -> Body:
        """``body`` within this key's caps: explicit values over a cap are a 400; where the
        body leaves a value to a server default above the cap, the cap is filled in, except
        the branch count of a request with a latency budget: the planner chooses it, within
        :attr:`branch_cap`."""
        if self.key is None:
            return body
        limits = self.key.limits
        update: dict[str, Any] = {}
        if limits.max_branches is not None:
            asked = body.tts.n_branches if body.tts else None
            if asked is not None and asked > limits.max_branches:
                raise RequestError(
                    f"n_branches {asked} exceeds this API key's cap {limits.max_branches}",
                    param="tts.n_branches",
                    code="key_limit",
                )
            planned = body.tts is not None and body.tts.latency_budget_s is not None
            if asked is None and not planned and default_n_branches > limits.max_branches:
                tts = body.tts or TtsOptions()
                update["tts"] = tts.model_copy(update={"n_branches": limits.max_branches})
        if limits.max_tokens is not None:
            asked = body.requested_max_tokens()
            if asked is not None and asked > limits.max_tokens:
                raise RequestError(
                    f"max_tokens {asked} exceeds this API key's cap {limits.max_tokens}",
                    param="max_tokens",
                    code="key_limit",
                )
            if asked is None and default_max_tokens > limits.max_tokens:
                update["max_tokens"] = limits.max_tokens
        if not update:
            return body
        return cast(Body, body.model_copy(update=update))

    def charge_on_exit(self, usage: UsageSource) -> None:
        """Charge the key, when the request ends, with the tokens ``usage`` reports then."""
        self._usage = usage

    async def close(self) -> None:
        """Charge the usage and release the lease (idempotent; safe when cancelled)."""
        if self._closed:
            return
        self._closed = True
        try:
            usage, limiter, key = self._usage, self._limiter, self.key
            if usage is not None and limiter is not None and key is not None:
                await limiter.run_detached(
                    _settle(limiter, key.id, usage), what=f"charge key {key.id}"
                )
        finally:
            if self.lease is not None:
                await self.lease.release()


async def _settle(limiter: Limiter, key_id: str, usage: UsageSource) -> None:
    await limiter.charge(key_id, await usage())


class Gatekeeper:
    """Authentication and admission for one deployment (one per API replica)."""

    def __init__(
        self,
        config: SecurityConfig,
        *,
        keys: ApiKeyStore | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        if config.enabled and (keys is None or limiter is None):
            raise ValueError("an enabled Gatekeeper needs a key store and a limiter")
        self.config = config
        self._keys = keys
        self._limiter = limiter

    @classmethod
    def over_redis(
        cls,
        config: SecurityConfig,
        client: Redis,
        *,
        schema: KeySchema | None = None,
        op_timeout_s: float = 5.0,
    ) -> Gatekeeper:
        """A gatekeeper on the state store's client (``decode_responses=True``)."""
        keys = SecurityKeySchema(schema or KeySchema())
        pepper = config.pepper.get_secret_value() if config.pepper else None
        return cls(
            config,
            keys=ApiKeyStore(
                client, hasher=KeyHasher(pepper), keys=keys, op_timeout_s=op_timeout_s
            ),
            limiter=Limiter(
                client, keys=keys, lease_ttl_s=config.lease_ttl_s, op_timeout_s=op_timeout_s
            ),
        )

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    async def authenticate(self, headers: Mapping[str, str]) -> AuthContext:
        if self._keys is None or not self.enabled:
            return AuthContext()
        try:
            key = await self._keys.verify(api_key_from_headers(headers))
        except AuthenticationError as exc:
            log.debug("refused a request: %s", exc.code)
            raise
        return AuthContext(key, limiter=self._limiter)

    async def admit(self, headers: Mapping[str, str]) -> AuthContext:
        auth = await self.authenticate(headers)
        if auth.key is None or self._limiter is None:
            return auth
        lease = await self._limiter.admit(auth.key.id, auth.key.limits)
        return AuthContext(auth.key, lease=lease, limiter=self._limiter)

    async def aclose(self) -> None:
        if self._limiter is not None:
            await self._limiter.aclose()


class _HoldsGatekeeper(Protocol):
    @property
    def security(self) -> Gatekeeper: ...


async def get_gatekeeper(request: Request) -> Gatekeeper:
    services: _HoldsGatekeeper = request.app.state.services
    return services.security


GatekeeperDep = Annotated[Gatekeeper, Depends(get_gatekeeper)]


async def authenticated(request: Request, gate: GatekeeperDep) -> AuthContext:
    return await gate.authenticate(request.headers)


async def admitted(request: Request, gate: GatekeeperDep) -> AsyncIterator[AuthContext]:
    auth = await gate.admit(request.headers)
    try:
        yield auth
    finally:
        await auth.close()


Authenticated = Annotated[AuthContext, Depends(authenticated)]
Admitted = Annotated[AuthContext, Depends(admitted)]


def install_security(
    app: FastAPI,
    config: SecurityConfig,
    *,
    on_error: Callable[[Request, SecurityError], None] | None = None,
) -> None:
    """Map security errors to responses with their headers (telling ``on_error``, e.g. to
    count them); add CORS if origins are set."""

    @app.exception_handler(SecurityError)
    async def _security_error(request: Request, exc: SecurityError) -> JSONResponse:
        if on_error is not None:
            on_error(request, exc)
        return JSONResponse(tts_error_body(exc), status_code=exc.status_code, headers=exc.headers())

    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "api-key", "content-type"],
            expose_headers=["retry-after"],
        )
