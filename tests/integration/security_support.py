"""Shared by the security integration tests (their Redis fixtures live in conftest.py)."""

from __future__ import annotations

from redis.asyncio import Redis

from tts_orchestrator.config.security import KeyLimits
from tts_orchestrator.security.keys import ApiKeyStore, KeyHasher, SecurityKeySchema

PEPPER = "test-pepper"
UNLIMITED = KeyLimits(requests_per_minute=None, max_concurrent=None)


def make_store(
    client: Redis, schema: SecurityKeySchema, pepper: str | None = PEPPER
) -> ApiKeyStore:
    return ApiKeyStore(client, hasher=KeyHasher(pepper), keys=schema)
