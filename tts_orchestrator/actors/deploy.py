"""Build the Ray side of a deployment from validated config.

`ray.remote` is applied here, at build time, so `PoolRunner` and `WorkerProcess` stay plain
classes. The API process talks to pool actors only through `PoolHandle`, which awaits Ray
object refs (never `ray.get` in async code).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import ray

from tts_orchestrator.actors.calls import call
from tts_orchestrator.actors.direct import DirectStreams, is_loopback
from tts_orchestrator.actors.jobs import BranchChunk, GenerationJob
from tts_orchestrator.actors.pool import PoolRunner
from tts_orchestrator.actors.worker_process import WorkerProcess
from tts_orchestrator.backends.base import WorkerMetrics
from tts_orchestrator.backends.chat_template import ChatTemplate
from tts_orchestrator.config import PoolConfig, RayConfig, Settings
from tts_orchestrator.exceptions import NoWorkerAvailable, TTSError

log = logging.getLogger(__name__)


def connect_ray(cfg: RayConfig) -> None:
    """Join the configured cluster, or start a private local Ray."""
    if ray.is_initialized():
        return
    # ray.init replaces the SIGTERM handler with one that exits at once; the server's own
    # handler (graceful drain) must stay in charge.
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    ray.init(
        # "local": a private cluster even if `ray start` left a cluster file on this machine
        address=cfg.address or "local",
        namespace=cfg.namespace,
        num_cpus=cfg.num_cpus if cfg.address is None else None,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@dataclass
class PoolHandle:
    """The API process's view of one pool actor."""

    config: PoolConfig
    actor: Any
    workers: list[Any] = field(default_factory=list)
    #: Rendering locally keeps an actor round trip off the time to first token.
    template: ChatTemplate | None = None
    #: Set when this process streams from the workers itself (see `actors.direct`).
    direct: DirectStreams | None = None

    async def load_template(self) -> None:
        info = await call(self.actor.chat_template_info.remote())
        self.template = ChatTemplate(info) if info is not None and info.template else None

    async def render(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]) -> str:
        if self.template is not None:
            return self.template.render(messages, template_kwargs=template_kwargs)
        return str(await call(self.actor.render.remote(messages, template_kwargs)))

    async def count_tokens(self, text: str) -> int:
        return int(await call(self.actor.count_tokens.remote(text)))

    async def metrics(self) -> list[WorkerMetrics]:
        return list(await call(self.actor.metrics.remote()))

    async def status(self) -> dict[str, Any]:
        status = dict(await call(self.actor.status.remote()))
        status["data_path"] = "direct" if self.direct is not None else "ray"
        if self.workers:
            status["processes"] = list(
                await asyncio.gather(*(call(w.status.remote()) for w in self.workers))
            )
        return status

    async def abort(self, request_id: str, branches: list[int] | None = None) -> int:
        if self.direct is not None:
            return await self.direct.abort(request_id, branches)
        return int(await call(self.actor.abort.remote(request_id, branches)))

    async def generate(self, job: GenerationJob) -> AsyncIterator[BranchChunk]:
        if self.direct is not None:
            async for batch in self.direct.generate(job):
                for item in batch:
                    yield item
            return
        gen = self.actor.generate.options(num_returns="streaming").remote(job)
        finished = False
        try:
            async for ref in gen:
                for item in await call(ref):  # the actor sends what is ready as one batch
                    yield item
            finished = True
        finally:
            if not finished:  # cancelled or failed: release every engine request now
                with contextlib.suppress(Exception):
                    ray.cancel(gen)
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.abort(job.request_id))


async def start_pool(pool: PoolConfig, settings: Settings) -> PoolHandle:
    """Start (or attach to) one pool: its worker processes, then its pool actor."""
    shared = settings.ray.address is not None
    lifetime = "detached" if shared else None
    workers: list[Any] = []
    urls = list(pool.urls)
    if pool.launch is not None:
        spec = pool.launch
        worker_cls = ray.remote(WorkerProcess)
        for i in range(spec.replicas):
            w = worker_cls.options(
                name=f"worker:{pool.name}:{i}",
                get_if_exists=True,
                lifetime=lifetime,
                num_cpus=spec.num_cpus,
                num_gpus=spec.num_gpus,
            ).remote(pool, i, settings.models.dir)
            workers.append(w)
        urls = list(await asyncio.gather(*(call(w.start.remote()) for w in workers)))
    actor: Any = (
        ray.remote(PoolRunner)
        .options(
            name=f"pool:{pool.name}",
            get_if_exists=True,
            lifetime=lifetime,
            num_cpus=0,
            max_concurrency=10_000,
            max_restarts=-1,  # a killed pool actor comes back; its in-flight requests fail
            max_task_retries=0,
        )
        .remote(pool, urls)
    )
    try:
        await call(actor.start.remote())
    except TTSError:
        raise
    except Exception as exc:
        raise NoWorkerAvailable(f"pool {pool.name} failed to start: {exc}") from exc
    handle = PoolHandle(config=pool, actor=actor, workers=workers)
    await handle.load_template()
    # A branch never outlives its request's hard deadline: past it a lease is stale.
    ttl = settings.server.request_timeout_s + 60.0
    handle.direct = await _direct_streams(pool, actor, workers, urls, lease_ttl_s=ttl)
    log.info("pool %s ready with workers %s", pool.name, urls)
    return handle


async def _direct_streams(
    pool: PoolConfig, actor: Any, workers: list[Any], urls: list[str], *, lease_ttl_s: float
) -> DirectStreams | None:
    """The direct data path, unless the workers are out of this process's reach: a loopback
    URL is reachable only from the node of the process that serves it (a launched worker) or
    that was given it (the pool actor, for `urls` pools)."""
    if not pool.direct_stream or pool.engine == "replay":
        return None
    if any(is_loopback(u) for u in urls):
        here = ray.get_runtime_context().get_node_id()
        owners = workers or [actor]
        nodes = await asyncio.gather(*(call(o.node_id.remote()) for o in owners))
        if any(node != here for node in nodes):
            log.info("pool %s: loopback workers on another node, streaming through Ray", pool.name)
            return None
    direct = DirectStreams(pool, actor, lease_ttl_s=lease_ttl_s)
    await direct.start()
    return direct


async def stop_pool(handle: PoolHandle, *, kill: bool) -> None:
    if handle.direct is not None:
        await handle.direct.aclose()
    with contextlib.suppress(Exception):
        await call(handle.actor.stop.remote())
    for w in handle.workers:
        with contextlib.suppress(Exception):
            await call(w.stop.remote())
    if kill:
        for a in [handle.actor, *handle.workers]:
            with contextlib.suppress(Exception):
                ray.kill(a)


async def start_verifiers(settings: Settings, redis_url: str) -> list[Any]:
    """The TrimR verifier service: consumers of one Redis Stream group, as Ray actors."""
    from tts_orchestrator.trim.trimmer import make_rule_judge
    from tts_orchestrator.trim.verifier_service import VerifierWorker

    lifetime = "detached" if settings.ray.address is not None else None
    cls: Any = ray.remote(VerifierWorker)
    workers = [
        cls.options(
            name=f"verifier:{i}",
            get_if_exists=True,
            lifetime=lifetime,
            num_cpus=0,
            max_restarts=-1,
        ).remote(
            redis_url,
            consumer=f"verifier-{i}",
            judge_factory=make_rule_judge,
            batch=settings.trim.batch,
        )
        for i in range(settings.trim.verifier_workers)
    ]
    await asyncio.gather(*(call(w.start.remote()) for w in workers))
    return workers


async def supervise_verifiers(workers: list[Any], *, every_s: float = 2.0) -> None:
    """Ray restarts a killed verifier actor but only re-runs its __init__: start it again."""
    while True:
        await asyncio.sleep(every_s)
        for w in workers:
            with contextlib.suppress(Exception):
                await call(w.start.remote())


async def stop_verifiers(workers: list[Any], *, kill: bool) -> None:
    for w in workers:
        with contextlib.suppress(Exception):
            await call(w.stop.remote())
        if kill:
            with contextlib.suppress(Exception):
                ray.kill(w)
