"""Per-key limits held in Redis, so every API replica enforces the same ones.

Admission is one Lua script (atomic, and timed by Redis's own clock so replicas with skewed
clocks agree) that checks, in order, the day's token budget, the sliding-window request rate
and the concurrency slots, and records the request in the last two only if all three pass:
a request turned away consumes nothing.

- **Rate**: a sliding-window log (a sorted set of admission times). Strict: never more than
  ``requests_per_minute`` admissions in any 60 s window; the 429 says when the oldest leaves.
- **Concurrency**: a sorted set of leases scored by their expiry. A live request renews its
  lease every third of the TTL and removes it when it ends; a lease of a replica that crashed
  simply expires, so a slot is never lost for longer than ``lease_ttl_s``.
- **Token budget**: a per-UTC-day counter charged after each request with its prompt +
  completion tokens over all branches. The request that crosses the budget completes;
  later ones get 429 until midnight UTC.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from redis.asyncio import Redis

from tts_orchestrator.config.security import KeyLimits
from tts_orchestrator.exceptions import StateUnavailable, TTSError
from tts_orchestrator.security.errors import LimitKind, RateLimited
from tts_orchestrator.security.keys import SecurityKeySchema
from tts_orchestrator.security.redis_io import redis_call

log = logging.getLogger(__name__)

TOKEN_COUNTER_TTL_S = 2 * 86400

# KEYS: rate log, leases, today's token counter.
# ARGV: rpm, window ms, max concurrent, lease ttl ms, daily tokens, lease id, ms to midnight.
# A limit of 0 is no limit. Returns {0, 0} when admitted, else {kind, retry-after ms}.
_ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_conc, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
if budget > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= budget then
  return {3, tonumber(ARGV[7])}
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, tonumber(oldest[2]) + window - now}
  end
end
if max_conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= max_conc then
    return {2, 1000}
  end
end
if rpm > 0 then
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[1], window + 1000)
end
if max_conc > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ttl + 1000)
end
return {0, 0}
"""

# KEYS: leases. ARGV: lease id, ttl ms. Returns 1 if renewed, 0 if the lease was lost.
_RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) < now then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + 1000)
return 1
"""

_KIND_BY_CODE = {1: LimitKind.RATE, 2: LimitKind.CONCURRENCY, 3: LimitKind.TOKEN_BUDGET}


def utc_day(now: float) -> tuple[str, float]:
    """The UTC date of ``now`` and the seconds left until the next UTC midnight."""
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = dt.datetime.combine(moment.date() + dt.timedelta(days=1), dt.time(), dt.UTC)
    return moment.date().isoformat(), (midnight - moment).total_seconds()


def _limit_message(kind: LimitKind, limits: KeyLimits, window_s: float) -> str:
    if kind is LimitKind.RATE:
        per = "minute" if window_s == 60 else f"{window_s:g} s"
        return f"Rate limit reached: {limits.requests_per_minute} requests per {per} for this key."
    if kind is LimitKind.CONCURRENCY:
        return f"Concurrency limit reached: {limits.max_concurrent} requests in flight."
    return f"Daily token budget of {limits.daily_tokens} is spent; it resets at 00:00 UTC."


class Lease:
    """One concurrency slot, renewed in the background until :meth:`release`.

    ``release`` is idempotent and safe to call from a cancelled task: the removal runs in a
    task of its own, so it completes even if the caller is cancelled again.
    """

    def __init__(self, limiter: Limiter, *, key_id: str, lease_id: str) -> None:
        self.key_id = key_id
        self.lease_id = lease_id
        self._limiter = limiter
        self._released = False
        self._renewer: asyncio.Task[None] | None = None

    @property
    def released(self) -> bool:
        return self._released

    def start_renewing(self) -> None:
        if self._renewer is None and not self._released:
            self._renewer = self._limiter.start_renewal(self)

    def stop_renewing(self) -> None:
        """Stop the renewals without releasing: the slot expires after the lease TTL."""
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.stop_renewing()
        await self._limiter.remove_lease(self)


class Limiter:
    """Rate, concurrency and token-budget limits of API keys over one Redis server."""

    def __init__(
        self,
        client: Redis,
        *,
        keys: SecurityKeySchema | None = None,
        lease_ttl_s: float = 30.0,
        window_s: float = 60.0,
        op_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._keys = keys or SecurityKeySchema()
        self._lease_ttl_ms = max(1, round(lease_ttl_s * 1000))
        self._window_s = window_s
        self._timeout_s = op_timeout_s
        self._clock = clock
        self._admit = client.register_script(_ADMIT_LUA)
        self._renew = client.register_script(_RENEW_LUA)
        self._background: set[asyncio.Task[None]] = set()
        self._renewals: set[asyncio.Task[None]] = set()

    async def admit(self, key_id: str, limits: KeyLimits) -> Lease | None:
        """Admit one request of ``key_id`` or raise :class:`RateLimited`.

        Returns the concurrency lease to release when the request ends (``None`` if the key
        has no concurrency limit); the lease is already being renewed.
        """
        day, to_midnight_s = utc_day(self._clock())
        lease_id = uuid.uuid4().hex
        k = self._keys
        async with redis_call("admit", timeout_s=self._timeout_s):
            code, retry_ms = await self._admit(
                keys=[k.rate(key_id), k.leases(key_id), k.tokens(key_id, day)],
                args=[
                    limits.requests_per_minute or 0,
                    round(self._window_s * 1000),
                    limits.max_concurrent or 0,
                    self._lease_ttl_ms,
                    limits.daily_tokens or 0,
                    lease_id,
                    round(to_midnight_s * 1000),
                ],
            )
        if int(code):
            kind = _KIND_BY_CODE[int(code)]
            raise RateLimited(
                _limit_message(kind, limits, self._window_s),
                kind=kind,
                retry_after_s=max(0.0, int(retry_ms) / 1000),
            )
        if limits.max_concurrent is None:
            return None
        lease = Lease(self, key_id=key_id, lease_id=lease_id)
        lease.start_renewing()
        return lease

    def start_renewal(self, lease: Lease) -> asyncio.Task[None]:
        task = asyncio.create_task(self._renew_until_cancelled(lease), name="tts-lease-renewal")
        self._renewals.add(task)
        task.add_done_callback(self._renewals.discard)
        return task

    async def _renew_until_cancelled(self, lease: Lease) -> None:
        interval_s = self._lease_ttl_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            try:
                async with redis_call("renew_lease", timeout_s=self._timeout_s):
                    held = await self._renew(
                        keys=[self._keys.leases(lease.key_id)],
                        args=[lease.lease_id, self._lease_ttl_ms],
                    )
            except StateUnavailable as exc:
                log.warning("cannot renew a lease of key %s: %s", lease.key_id, exc.message)
                continue
            if not held:
                log.warning("a lease of key %s expired before its request ended", lease.key_id)
                return

    async def remove_lease(self, lease: Lease) -> None:
        async def remove() -> None:
            async with redis_call("release_lease", timeout_s=self._timeout_s):
                await self._client.zrem(self._keys.leases(lease.key_id), lease.lease_id)

        await self.run_detached(remove(), what=f"release a lease of key {lease.key_id}")

    async def charge(self, key_id: str, tokens: int) -> None:
        """Add ``tokens`` to today's spending of ``key_id`` (runs to the end once started)."""
        if tokens <= 0:
            return
        key = self._keys.tokens(key_id, utc_day(self._clock())[0])

        async def incr() -> None:
            async with (
                redis_call("charge_tokens", timeout_s=self._timeout_s),
                self._client.pipeline(transaction=True) as pipe,
            ):
                pipe.incrby(key, tokens)
                pipe.expire(key, TOKEN_COUNTER_TTL_S)
                await pipe.execute()

        await self.run_detached(incr(), what=f"charge {tokens} tokens to key {key_id}")

    async def spent_today(self, key_id: str) -> int:
        key = self._keys.tokens(key_id, utc_day(self._clock())[0])
        async with redis_call("spent_today", timeout_s=self._timeout_s):
            value = await self._client.get(key)
        return int(value or 0)

    async def in_flight(self, key_id: str) -> int:
        """Leases of ``key_id`` that have not expired (by this host's clock)."""
        now_ms = self._clock() * 1000
        async with redis_call("in_flight", timeout_s=self._timeout_s):
            return int(await self._client.zcount(self._keys.leases(key_id), now_ms, "+inf"))

    async def aclose(self) -> None:
        """At shutdown: stop renewing the leases still held (they expire by themselves) and
        wait for the releases and charges still running."""
        for task in list(self._renewals):
            task.cancel()
        await asyncio.gather(*self._renewals, return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def run_detached(self, op: Coroutine[Any, Any, None], *, what: str) -> None:
        """Run ``op`` in a task of its own, so a caller cancelled again (a client gone, a
        shutdown) cannot cut it short; a failure is logged (a lease then expires by itself)."""

        async def logged() -> None:
            try:
                await op
            except TTSError as exc:
                log.warning("could not %s: %s", what, exc.message)

        task = asyncio.ensure_future(logged())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await asyncio.shield(task)
