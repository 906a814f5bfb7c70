"""Where pool profiles live: a JSON file (the profiler's output, read by `plan`) and Redis
(shared by every API replica and kept current from live traffic).

Both stores hold :class:`policies.profile.PoolProfile` documents, one per pool. The file is one
:class:`~policies.profile.ProfileSet`; in Redis each pool has its own key
``tts:profiles:<pool>`` (see :mod:`tts_orchestrator.state.schema`) holding the profile's JSON,
expiring ``profile_s`` after its last write, so a profile nobody refreshes ages out.

:meth:`ProfileStore.observe` folds a live observation in (``PoolProfile.observe``, an
exponential moving average). On Redis it is an optimistic transaction (WATCH / MULTI, retried
on conflict), so concurrent replicas never lose each other's updates.
"""

from __future__ import annotations

import abc
import asyncio
import random
from collections.abc import Iterable
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from policies.profile import PoolProfile, ProfileSet
from tts_orchestrator.exceptions import StateUnavailable
from tts_orchestrator.state.schema import KeySchema, KeyTtls

_OBSERVE_ATTEMPTS = 8


class ProfileStore(abc.ABC):
    """Profiles by pool name."""

    @abc.abstractmethod
    async def get(self, pool: str) -> PoolProfile | None:
        """The stored profile of ``pool``, or None."""

    @abc.abstractmethod
    async def put(self, profile: PoolProfile) -> None:
        """Store ``profile``, replacing the one of the same pool."""

    @abc.abstractmethod
    async def load(self, pools: Iterable[str] | None = None) -> ProfileSet:
        """The stored profiles of ``pools`` (None: every stored pool); missing ones are skipped."""

    async def put_all(self, profiles: ProfileSet) -> None:
        for profile in profiles.profiles:
            await self.put(profile)

    async def observe(
        self,
        pool: str,
        *,
        concurrency: int,
        step_time_s: float | None = None,
        accepted_tokens_per_step: float | None = None,
        alpha: float = 0.2,
    ) -> PoolProfile | None:
        """Fold one live observation into the stored profile; None when there is none."""
        profile = await self.get(pool)
        if profile is None:
            return None
        updated = profile.observe(
            concurrency=concurrency,
            step_time_s=step_time_s,
            accepted_tokens_per_step=accepted_tokens_per_step,
            alpha=alpha,
        )
        await self.put(updated)
        return updated

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections owned by the store."""


def _only(profiles: ProfileSet, pools: Iterable[str] | None) -> ProfileSet:
    """The profiles of ``pools`` (None: all)."""
    if pools is None:
        return profiles
    wanted = set(pools)
    return ProfileSet.of(p for p in profiles.profiles if p.pool in wanted)


class MemoryProfileStore(ProfileStore):
    """Profiles held in this process (an in-process service, tests)."""

    def __init__(self, profiles: ProfileSet | None = None) -> None:
        self._profiles = profiles or ProfileSet()

    async def get(self, pool: str) -> PoolProfile | None:
        return self._profiles.get(pool) if pool in self._profiles else None

    async def put(self, profile: PoolProfile) -> None:
        self._profiles = self._profiles.with_profile(profile)

    async def load(self, pools: Iterable[str] | None = None) -> ProfileSet:
        return _only(self._profiles, pools)


class FileProfileStore(ProfileStore):
    """One JSON :class:`ProfileSet` file; a missing file is an empty set.

    Reads and writes run in a worker thread; a write replaces the file atomically.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = asyncio.Lock()

    def read(self) -> ProfileSet:
        """The whole file, synchronously (for the CLI)."""
        return ProfileSet.load(self.path) if self.path.exists() else ProfileSet()

    def write(self, profiles: ProfileSet) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        profiles.save(tmp)
        tmp.replace(self.path)

    def merge(self, profile: PoolProfile) -> ProfileSet:
        """Add or replace one pool's profile in the file, synchronously; returns the new set."""
        profiles = self.read().with_profile(profile)
        self.write(profiles)
        return profiles

    async def get(self, pool: str) -> PoolProfile | None:
        profiles = await asyncio.to_thread(self.read)
        return profiles.get(pool) if pool in profiles else None

    async def put(self, profile: PoolProfile) -> None:
        async with self._lock:
            await asyncio.to_thread(self.merge, profile)

    async def load(self, pools: Iterable[str] | None = None) -> ProfileSet:
        return _only(await asyncio.to_thread(self.read), pools)

    async def observe(
        self,
        pool: str,
        *,
        concurrency: int,
        step_time_s: float | None = None,
        accepted_tokens_per_step: float | None = None,
        alpha: float = 0.2,
    ) -> PoolProfile | None:
        async with self._lock:  # read-modify-write of one file by one process
            profiles = await asyncio.to_thread(self.read)
            if pool not in profiles:
                return None
            updated = profiles.get(pool).observe(
                concurrency=concurrency,
                step_time_s=step_time_s,
                accepted_tokens_per_step=accepted_tokens_per_step,
                alpha=alpha,
            )
            await asyncio.to_thread(self.write, profiles.with_profile(updated))
            return updated


class RedisProfileStore(ProfileStore):
    """Profiles in Redis under ``tts:profiles:<pool>`` with a TTL refreshed on every write.

    Pass the service's client (``RedisStateStore.client``) to share its connection pool, or
    use :meth:`from_url` for a store that owns (and closes) its own client.
    """

    def __init__(
        self,
        client: Redis,
        *,
        keys: KeySchema | None = None,
        ttl_s: int | None = None,
        owns_client: bool = False,
    ) -> None:
        self._client = client
        self._keys = keys or KeySchema()
        self._ttl_s = ttl_s if ttl_s is not None else KeyTtls().profile_s
        self._owns_client = owns_client
        # Updates from this process queue here; WATCH only has to arbitrate between processes.
        self._observe_lock = asyncio.Lock()

    @classmethod
    def from_url(
        cls, url: str, *, keys: KeySchema | None = None, socket_timeout_s: float = 2.0
    ) -> RedisProfileStore:
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
        )
        return cls(client, keys=keys, owns_client=True)

    def key(self, pool: str) -> str:
        return self._keys.live_profile(pool)

    async def ttl_s(self, pool: str) -> int | None:
        """Seconds until the profile of ``pool`` expires (None: no such profile)."""
        try:
            ttl = int(await self._client.ttl(self.key(pool)))
        except RedisError as exc:
            raise StateUnavailable(f"profile store unavailable (ttl {pool}): {exc}") from exc
        return ttl if ttl >= 0 else None

    async def get(self, pool: str) -> PoolProfile | None:
        try:
            raw = await self._client.get(self.key(pool))
        except RedisError as exc:
            raise StateUnavailable(f"profile store unavailable (get {pool}): {exc}") from exc
        return None if raw is None else PoolProfile.model_validate_json(raw)

    async def put(self, profile: PoolProfile) -> None:
        try:
            await self._client.set(
                self.key(profile.pool), profile.model_dump_json(), ex=self._ttl_s
            )
        except RedisError as exc:
            raise StateUnavailable(
                f"profile store unavailable (put {profile.pool}): {exc}"
            ) from exc

    async def load(self, pools: Iterable[str] | None = None) -> ProfileSet:
        try:
            if pools is None:
                head = self.key("")
                keys = [k async for k in self._client.scan_iter(match=f"{head}*")]
            else:
                keys = [self.key(p) for p in pools]
            values = await self._client.mget(keys) if keys else []
        except RedisError as exc:
            raise StateUnavailable(f"profile store unavailable (load): {exc}") from exc
        profiles = [PoolProfile.model_validate_json(v) for v in values if v is not None]
        return ProfileSet.of(sorted(profiles, key=lambda p: p.pool))

    async def observe(
        self,
        pool: str,
        *,
        concurrency: int,
        step_time_s: float | None = None,
        accepted_tokens_per_step: float | None = None,
        alpha: float = 0.2,
    ) -> PoolProfile | None:
        async with self._observe_lock:
            return await self._observe(
                pool,
                concurrency=concurrency,
                step_time_s=step_time_s,
                accepted_tokens_per_step=accepted_tokens_per_step,
                alpha=alpha,
            )

    async def _observe(
        self,
        pool: str,
        *,
        concurrency: int,
        step_time_s: float | None,
        accepted_tokens_per_step: float | None,
        alpha: float,
    ) -> PoolProfile | None:
        key = self.key(pool)
        try:
            for attempt in range(_OBSERVE_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(random.uniform(0, 0.01 * attempt))
                async with self._client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        if raw is None:
                            return None
                        updated = PoolProfile.model_validate_json(raw).observe(
                            concurrency=concurrency,
                            step_time_s=step_time_s,
                            accepted_tokens_per_step=accepted_tokens_per_step,
                            alpha=alpha,
                        )
                        pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                        pipe.set(key, updated.model_dump_json(), ex=self._ttl_s)
                        await pipe.execute()
                        return updated
                    except WatchError:
                        continue  # another replica updated it first: fold into theirs
        except RedisError as exc:
            raise StateUnavailable(f"profile store unavailable (observe {pool}): {exc}") from exc
        raise StateUnavailable(f"profile of {pool} kept changing; observation dropped")

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
