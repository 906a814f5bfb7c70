"""The API's gate: which key is calling, and whether its limits admit the request.

:class:`Gatekeeper` does both, a no-op while ``security.enabled`` is false:
:meth:`~Gatekeeper.authenticate` verifies the key only (listing models, pools, request records);
:meth:`~Gatekeeper.admit` verifies it and admits the request against the key's token budget,
rate and concurrency limits, returning an :class:`AuthContext` whose lease the caller closes
when the response is done. A replica that dies mid-request leaves a lease that expires by
itself. The FastAPI dependencies that call it live in :mod:`tts_orchestrator.api.deps`.

The key is read from ``Authorization: Bearer <key>`` or, failing that, ``api-key: <key>``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from redis.asyncio import Redis

from tts_orchestrator.config.security import KeyLimits, SecurityConfig
from tts_orchestrator.protocol import ChatCompletionRequest, CompletionRequest
from tts_orchestrator.security.errors import AuthenticationError
from tts_orchestrator.security.keys import (
    ApiKeyRecord,
    ApiKeyStore,
    KeyHasher,
    SecurityKeySchema,
)
from tts_orchestrator.security.limits import Lease, Limiter
from tts_orchestrator.state.base import StateStore
from tts_orchestrator.state.schema import KeySchema

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
    def limits(self) -> KeyLimits | None:
        """The key's limits (None without a key); the request's shape is bounded by them."""
        return self.key.limits if self.key else None

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
