"""One guard for the security package's Redis calls: a deadline, and Redis errors as 503."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import RedisError

from tts_orchestrator.exceptions import StateUnavailable


@asynccontextmanager
async def redis_call(op: str, *, timeout_s: float) -> AsyncIterator[None]:
    """Run a Redis operation under ``timeout_s``; any failure becomes ``StateUnavailable``.

    Authentication fails closed: when Redis cannot answer, requests get 503, never a pass.
    """
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except RedisError as exc:
        raise StateUnavailable(f"key store unavailable ({op}): {exc}") from exc
    except (TimeoutError, OSError) as exc:
        raise StateUnavailable(
            f"key store unavailable ({op}): no answer within {timeout_s:.2f}s"
        ) from exc
