"""What the API runs on: the services a deployment's lifespan builds, and closes in reverse.

:func:`cluster_runtime` is the service: Redis (configured or embedded), Ray pool actors and
their workers, the verifier actors, the live planner. :func:`inprocess_runtime` runs the same
orchestrator in this process over in-process pools (:class:`~tts_orchestrator.actors.local.
LocalPool`), an in-memory state store and an in-process verifier: no Redis, no Ray, no HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import ray

from tts_orchestrator.actors.deploy import (
    PoolHandle,
    connect_ray,
    start_pool,
    start_verifiers,
    stop_pool,
    stop_verifiers,
    supervise_verifiers,
)
from tts_orchestrator.actors.local import LocalPool
from tts_orchestrator.api.deps import Services
from tts_orchestrator.backends.base import WorkerBackend
from tts_orchestrator.config import Settings
from tts_orchestrator.metrics import ServiceMetrics
from tts_orchestrator.planning.live import LivePlanner, LivePool
from tts_orchestrator.planning.store import MemoryProfileStore, ProfileStore, RedisProfileStore
from tts_orchestrator.request.orchestrator import Orchestrator
from tts_orchestrator.security.auth import Gatekeeper
from tts_orchestrator.security.redaction import install_redaction
from tts_orchestrator.state.base import StateStore
from tts_orchestrator.state.embedded import EmbeddedRedis, resolve_data_dir
from tts_orchestrator.state.memory import InMemoryStateStore
from tts_orchestrator.state.redis_store import RedisStateStore
from tts_orchestrator.trim.verifier_service import LocalVerifier, VerifierClient
from verifiers.equivalence import EquivalenceChecker
from verifiers.judges import ThoughtJudge
from verifiers.voting import EquivalenceFn

log = logging.getLogger(__name__)


async def _listen_for_cancels(store: StateStore, orchestrator: Orchestrator) -> None:
    async with store.cancel_listener() as listener:
        orchestrator.cancel_listener = listener
        async for event in listener:
            orchestrator.cancel_local(event.request_id, event.reason)


@contextlib.asynccontextmanager
async def _redis(settings: Settings) -> AsyncIterator[tuple[str, EmbeddedRedis | None]]:
    """The configured Redis, else a private, supervised and persistent redis-server."""
    if settings.redis.url is not None:
        yield settings.redis.url, None
        return
    async with EmbeddedRedis(data_dir=resolve_data_dir(settings.redis.data_dir)) as embedded:
        yield embedded.url, embedded


@contextlib.asynccontextmanager
async def cluster_runtime(settings: Settings) -> AsyncIterator[Services]:
    """The deployment ``settings`` describe, up until the context exits."""
    async with contextlib.AsyncExitStack() as stack:
        url, embedded = await stack.enter_async_context(_redis(settings))
        store = RedisStateStore(url, config=settings.redis)
        stack.push_async_callback(store.aclose)
        await store.ping()
        gate = Gatekeeper.over_redis(
            settings.security,
            store.client,
            schema=store.keys,
            op_timeout_s=2 * settings.redis.socket_timeout_s + 0.25,
        )
        stack.push_async_callback(gate.aclose)
        stack.callback(install_redaction(log_prompts=settings.security.log_prompts))
        if not settings.security.enabled and settings.server.host not in (
            "127.0.0.1",
            "::1",
            "localhost",
        ):
            log.warning("API keys are disabled and the API listens on %s", settings.server.host)
        started_ray = not ray.is_initialized()
        connect_ray(settings.ray)
        if started_ray and settings.ray.address is None:
            stack.callback(ray.shutdown)
        handles: list[PoolHandle] = list(
            await asyncio.gather(*(start_pool(p, settings) for p in settings.pools))
        )
        for h in handles:
            stack.push_async_callback(stop_pool, h, kill=settings.ray.address is None)
        checker = EquivalenceChecker(timeout_s=settings.tts.equivalence_timeout_s)
        stack.callback(checker.close)
        await asyncio.to_thread(checker.warm)  # not on the first vote's critical path
        metrics = ServiceMetrics()
        replica_id = uuid.uuid4().hex[:12]
        verifier: VerifierClient | None = None
        workers: list[Any] = []
        if settings.trim.verifier_workers > 0:
            workers = await start_verifiers(settings, url)
            stack.push_async_callback(stop_verifiers, workers, kill=settings.ray.address is None)
            supervisor = asyncio.create_task(supervise_verifiers(workers))
            stack.push_async_callback(_cancel_task, supervisor)
            verifier = VerifierClient(store.client, replica_id=replica_id, keys=store.keys)
            verifier.start()
            stack.push_async_callback(verifier.aclose)
        live = LivePlanner(settings.policy, store=RedisProfileStore(store.client))
        await live.start(
            [
                LivePool(h.config.name, h.config.engine, h.metrics)
                for h in handles
                if h.config.engine != "replay"
            ]
        )
        stack.push_async_callback(live.aclose)
        orchestrator = Orchestrator(
            settings=settings,
            pools={h.config.name: h for h in handles},
            store=store,
            metrics=metrics,
            replica_id=replica_id,
            equivalent=checker.equivalent,
            verifier=verifier,
            verifier_workers=workers,
            planner=live,
        )
        listener = asyncio.create_task(_listen_for_cancels(store, orchestrator))
        stack.push_async_callback(_cancel_task, listener)
        yield Services(
            settings=settings,
            orchestrator=orchestrator,
            store=store,
            metrics=metrics,
            security=gate,
            embedded_redis=embedded,
        )
        await orchestrator.shutdown()


async def _cancel_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


@contextlib.asynccontextmanager
async def inprocess_runtime(
    settings: Settings,
    *,
    pools: Mapping[str, Sequence[WorkerBackend]],
    equivalent: EquivalenceFn,
    store: StateStore | None = None,
    security: Gatekeeper | None = None,
    judge: ThoughtJudge | None = None,
    verifier_delay_s: float = 0.0,
    profile_store: ProfileStore | None = None,
) -> AsyncIterator[Services]:
    """The orchestrator of ``settings`` in this process, each configured pool served by the
    workers ``pools`` gives for its name; trimming judges with ``judge`` (none: no trimming),
    planning reads ``profile_store`` (none: an empty one, seeded from ``settings.policy``'s
    profiles file if it names one)."""
    async with contextlib.AsyncExitStack() as stack:
        state = store or InMemoryStateStore()
        stack.push_async_callback(state.aclose)
        local: dict[str, LocalPool] = {}
        for config in settings.pools:
            pool = LocalPool(config, pools[config.name])
            await pool.start()
            stack.push_async_callback(pool.aclose)
            local[config.name] = pool
        live = LivePlanner(
            settings.policy,
            store=profile_store or MemoryProfileStore(),
        )
        await live.start([LivePool(n, p.config.engine, p.metrics) for n, p in local.items()])
        stack.push_async_callback(live.aclose)
        metrics = ServiceMetrics()
        orchestrator = Orchestrator(
            settings=settings,
            pools=dict(local),
            store=state,
            metrics=metrics,
            replica_id=uuid.uuid4().hex[:12],
            equivalent=equivalent,
            verifier=LocalVerifier(judge, delay_s=verifier_delay_s) if judge else None,
            planner=live,
        )
        listener = asyncio.create_task(_listen_for_cancels(state, orchestrator))
        stack.push_async_callback(_cancel_task, listener)
        yield Services(
            settings=settings,
            orchestrator=orchestrator,
            store=state,
            metrics=metrics,
            security=security or Gatekeeper(settings.security),
        )
        await orchestrator.shutdown()
