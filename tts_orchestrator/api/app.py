"""App factory and lifespan: build Redis, Ray pools and the orchestrator; close in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import ray
from fastapi import FastAPI, Request

from tts_orchestrator.actors.deploy import (
    PoolHandle,
    connect_ray,
    start_pool,
    start_verifiers,
    stop_pool,
    stop_verifiers,
    supervise_verifiers,
)
from tts_orchestrator.api.deps import Services
from tts_orchestrator.api.errors import install_error_handlers
from tts_orchestrator.api.limits import BodySizeLimit
from tts_orchestrator.api.routes import router
from tts_orchestrator.config import Settings
from tts_orchestrator.exceptions import TTSError
from tts_orchestrator.live_profiles import LivePlanner, LivePool
from tts_orchestrator.metrics import ServiceMetrics
from tts_orchestrator.orchestrator import Orchestrator
from tts_orchestrator.profile_store import RedisProfileStore
from tts_orchestrator.security.auth import Gatekeeper, install_security
from tts_orchestrator.security.redaction import install_redaction
from tts_orchestrator.state.base import StateStore
from tts_orchestrator.state.embedded import EmbeddedRedis, resolve_data_dir
from tts_orchestrator.state.redis_store import RedisStateStore
from tts_orchestrator.verification import VerifierClient
from verifiers.equivalence import EquivalenceChecker

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


def _count_error(request: Request, exc: TTSError) -> None:
    """Errors raised before a route runs (401, 429) still reach the error metric."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None:
        services.metrics.errors.labels(exc.error_type).inc()


def build_app(settings: Settings) -> FastAPI:
    """The ASGI app for `settings`; nothing is started until its lifespan runs."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
                stack.push_async_callback(
                    stop_verifiers, workers, kill=settings.ray.address is None
                )
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
            app.state.services = Services(
                settings=settings,
                orchestrator=orchestrator,
                store=store,
                metrics=metrics,
                security=gate,
                embedded_redis=embedded,
            )
            log.info("tts-orchestrator ready on pools %s", [h.config.name for h in handles])
            yield
            await orchestrator.shutdown()

    app = FastAPI(title="tts-orchestrator", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.server.max_body_bytes)
    install_error_handlers(app)
    install_security(app, settings.security, on_error=_count_error)
    app.include_router(router)
    return app


async def _cancel_task(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
