"""API keys: issued once, kept in Redis only as a keyed hash, looked up in O(1).

A key is ``tts-`` followed by 32 random bytes in URL-safe base64 (43 characters). At rest
Redis holds ``HMAC-SHA256(pepper, key)`` as part of the record's key name, never the key.
A fast hash is the right tool here: the key carries 256 random bits, so there is nothing to
guess offline and a slow KDF (scrypt, argon2) would only add tens of milliseconds of CPU to
every request. The pepper (``security.pepper``) additionally means that a copy of Redis alone
cannot even confirm a leaked key; changing it invalidates every key. Lookup is one HGETALL of
the record named by the digest, so a Redis-side comparison of digests replaces any string
comparison of secrets in Python.

Keys (under the state store's prefix, ``tts`` by default)::

    tts:apikey:<digest>                hash  id, name, created_at, limits, [revoked_at] (JSON)
    tts:apikeys                        hash  key id -> digest (for revoke and list)
    tts:{apikey:<id>}:rate             zset  admitted requests of the sliding window
    tts:{apikey:<id>}:leases           zset  lease id -> expiry (ms), the concurrency slots
    tts:{apikey:<id>}:tokens:<date>    string tokens charged on that UTC date, ttl 2 days

Records never expire (a revoked key stays, marked, for the audit trail). The writes assume one
Redis server (the index and a record may live in different cluster slots).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from tts_orchestrator.config.security import KeyLimits
from tts_orchestrator.exceptions import TTSError
from tts_orchestrator.security.errors import AuthenticationError, KeyNotFound
from tts_orchestrator.security.redis_io import redis_call
from tts_orchestrator.state.schema import KeySchema

KEY_PREFIX = "tts-"
_KEY_RE = re.compile(r"tts-[A-Za-z0-9_-]{43}")
_KEY_ID_RE = re.compile(r"key_[0-9a-f]{16}")
KEY_NAME_PATTERN = r"^[\w .@:/+-]{1,64}$"


def new_api_key() -> str:
    """A fresh key: ``tts-`` + 32 random bytes, URL-safe base64 without padding."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def looks_like_api_key(candidate: str) -> bool:
    """Shape check, so that garbage is refused without a Redis round trip."""
    return _KEY_RE.fullmatch(candidate) is not None


def is_key_id(candidate: str) -> bool:
    return _KEY_ID_RE.fullmatch(candidate) is not None


class KeyHasher:
    """``HMAC-SHA256(pepper, key)`` as hex: the only form of a key that is stored."""

    def __init__(self, pepper: str | None = None) -> None:
        self._pepper = (pepper or "").encode()

    def __repr__(self) -> str:
        return "KeyHasher(pepper=<hidden>)"

    def digest(self, api_key: str) -> str:
        return hmac.new(self._pepper, api_key.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SecurityKeySchema:
    """Names of the Redis keys of API keys and their limits (see the module docstring)."""

    base: KeySchema = field(default_factory=KeySchema)

    def record(self, digest: str) -> str:
        return self.base.api_key(digest)

    @property
    def index(self) -> str:
        return f"{self.base.prefix}:apikeys"

    def _tag(self, key_id: str) -> str:
        # One hash tag per key id: a limiter script touching several of them stays in one slot.
        return f"{self.base.prefix}:{{apikey:{key_id}}}"

    def rate(self, key_id: str) -> str:
        return f"{self._tag(key_id)}:rate"

    def leases(self, key_id: str) -> str:
        return f"{self._tag(key_id)}:leases"

    def tokens(self, key_id: str, day: str) -> str:
        return f"{self._tag(key_id)}:tokens:{day}"


class ApiKeyRecord(BaseModel):
    """What is stored about a key (never the key itself)."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(..., description="Public id, used to revoke and in logs.")
    name: str = Field(..., pattern=KEY_NAME_PATTERN)
    created_at: float = Field(..., description="Unix time of creation.")
    revoked_at: float | None = None
    limits: KeyLimits = Field(default_factory=KeyLimits)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A newly created key: the secret exists only here, to be shown once."""

    record: ApiKeyRecord
    secret: str = field(repr=False)


# KEYS: index, record. ARGV: key id, digest, record field/value pairs...
_CREATE_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: record. ARGV: revoked_at (JSON). The first revocation time is kept.
_REVOKE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'revoked_at', ARGV[1])
return 1
"""

_CREATE_ATTEMPTS = 3


def _encode(record: ApiKeyRecord) -> list[str]:
    # Only top-level absences are dropped: an unlimited limit is a stored null, not a missing
    # field (which would read back as the default limit).
    fields = record.model_dump(mode="json")
    return [
        item
        for name, value in fields.items()
        if value is not None
        for item in (name, json.dumps(value))
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(stored: Mapping[bytes | str, bytes | str]) -> ApiKeyRecord:
    return ApiKeyRecord.model_validate({_text(k): json.loads(v) for k, v in stored.items()})


class ApiKeyStore:
    """Create, revoke, list and verify API keys in Redis (``decode_responses=True`` client)."""

    def __init__(
        self,
        client: Redis,
        *,
        hasher: KeyHasher,
        keys: SecurityKeySchema | None = None,
        op_timeout_s: float = 5.0,
    ) -> None:
        self._client = client
        self._hasher = hasher
        self._keys = keys or SecurityKeySchema()
        self._timeout_s = op_timeout_s
        self._create = client.register_script(_CREATE_LUA)
        self._revoke = client.register_script(_REVOKE_LUA)

    @property
    def keys(self) -> SecurityKeySchema:
        return self._keys

    async def create(self, name: str, *, limits: KeyLimits) -> IssuedKey:
        """Issue a key; the returned secret is the only copy there will ever be."""
        for _ in range(_CREATE_ATTEMPTS):
            secret = new_api_key()
            record = ApiKeyRecord(
                id=f"key_{secrets.token_hex(8)}", name=name, created_at=time.time(), limits=limits
            )
            digest = self._hasher.digest(secret)
            async with redis_call("create_api_key", timeout_s=self._timeout_s):
                created = await self._create(
                    keys=[self._keys.index, self._keys.record(digest)],
                    args=[record.id, digest, *_encode(record)],
                )
            if created:
                return IssuedKey(record=record, secret=secret)
        raise TTSError("could not allocate a unique API key id", code="key_collision")

    async def get(self, key_id: str) -> ApiKeyRecord:
        digest = await self._digest_of(key_id)
        async with redis_call("get_api_key", timeout_s=self._timeout_s):
            stored = await self._client.hgetall(self._keys.record(digest))
        if not stored:
            raise KeyNotFound(f"no API key with id {key_id!r}")
        return _decode(stored)

    async def revoke(self, key_id: str) -> ApiKeyRecord:
        """Mark a key revoked (idempotent); its next request gets 401."""
        digest = await self._digest_of(key_id)
        async with redis_call("revoke_api_key", timeout_s=self._timeout_s):
            found = await self._revoke(
                keys=[self._keys.record(digest)], args=[json.dumps(time.time())]
            )
        if not found:
            raise KeyNotFound(f"no API key with id {key_id!r}")
        return await self.get(key_id)

    async def list(self) -> list[ApiKeyRecord]:
        """Every key's record (active and revoked), oldest first."""
        async with redis_call("list_api_keys", timeout_s=self._timeout_s):
            index = await self._client.hgetall(self._keys.index)
            async with self._client.pipeline(transaction=False) as pipe:
                for digest in index.values():
                    pipe.hgetall(self._keys.record(_text(digest)))
                stored: list[dict[bytes | str, bytes | str]] = await pipe.execute()
        records = [_decode(s) for s in stored if s]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def verify(self, api_key: str) -> ApiKeyRecord:
        """The record of a valid, unrevoked key; ``AuthenticationError`` otherwise."""
        if not looks_like_api_key(api_key):
            raise AuthenticationError("Invalid API key.", code="invalid_api_key")
        async with redis_call("verify_api_key", timeout_s=self._timeout_s):
            stored = await self._client.hgetall(self._keys.record(self._hasher.digest(api_key)))
        if not stored:
            raise AuthenticationError("Invalid API key.", code="invalid_api_key")
        record = _decode(stored)
        if record.revoked:
            raise AuthenticationError("This API key has been revoked.", code="revoked_api_key")
        return record

    async def _digest_of(self, key_id: str) -> str:
        if not is_key_id(key_id):
            raise KeyNotFound(f"no API key with id {key_id[:40]!r}")
        async with redis_call("find_api_key", timeout_s=self._timeout_s):
            digest = await self._client.hget(self._keys.index, key_id)
        if digest is None:
            raise KeyNotFound(f"no API key with id {key_id!r}")
        return _text(digest)
