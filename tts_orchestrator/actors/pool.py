"""The pool actor body: owns one pool's worker clients, their health and load counters.

It places every branch it streams itself (the Ray data path, `generate`) on the least-loaded
healthy worker. An API process that streams from the workers directly (`actors.direct`) places
from the actor's status and reports each branch (`leased` / `release`), so the load every
replica sees counts both. Plain class:
`ray.remote` is applied in `actors.deploy`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import ray

from tts_orchestrator.actors.branch_tasks import BranchTasks
from tts_orchestrator.actors.jobs import BranchChunk, BranchSpec, GenerationJob
from tts_orchestrator.backends.base import WorkerBackend, WorkerMetrics
from tts_orchestrator.backends.chat_template import ChatTemplateInfo
from tts_orchestrator.backends.llamacpp import LlamaCppBackend
from tts_orchestrator.backends.openai_http import OpenAIHTTPBackend
from tts_orchestrator.config import EngineKind, PoolConfig
from tts_orchestrator.exceptions import NoWorkerAvailable, WorkerError

log = logging.getLogger(__name__)

_HEALTH_INTERVAL_S = 1.0


def http_backend(engine: EngineKind) -> Callable[..., WorkerBackend]:
    if engine == "llama_cpp":
        return LlamaCppBackend
    from tts_orchestrator.backends.vllm import VLLMBackend

    return VLLMBackend


class PoolRunner:
    """Runs generation jobs on the least-loaded healthy worker of one pool."""

    def __init__(
        self,
        pool: PoolConfig,
        worker_urls: list[str],
        *,
        backends: Sequence[WorkerBackend] | None = None,
    ) -> None:
        """``backends`` replaces the ones ``pool`` and ``worker_urls`` describe (an in-process
        pool of engines built by the caller)."""
        self.pool = pool
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        )
        self.backends: list[WorkerBackend] = (
            list(backends) if backends is not None else self._build_backends(worker_urls)
        )
        self._load = {b.name: 0 for b in self.backends}
        self._healthy = {b.name: True for b in self.backends}
        self._branches = BranchTasks(place=self._place, release=self._release, failed=self._failed)
        # request → branch → (worker, monotonic expiry) of branches an API process streams
        self._leases: dict[str, dict[int, tuple[str, float]]] = {}
        self._health_task: asyncio.Task[None] | None = None

    def _build_backends(self, urls: list[str]) -> list[WorkerBackend]:
        if self.pool.engine == "replay":
            from tts_orchestrator.backends.replay import ReplayBackend

            assert self.pool.replay is not None
            replay = self.pool.replay
            return [
                ReplayBackend(
                    replay, name=f"{self.pool.name}/replay", fallback_text=replay.fallback_text
                )
            ]
        cls = http_backend(self.pool.engine)
        return [
            cls(url=u, model=self.pool.model, client=self._client, name=f"{self.pool.name}/{i}")
            for i, u in enumerate(urls)
        ]

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self._check_health()
        self._ensure_health_loop()

    def _ensure_health_loop(self) -> None:
        # Also reached lazily: after Ray restarts a killed actor, only __init__ runs again.
        if self._health_task is None or self._health_task.done():
            self._health_task = asyncio.create_task(self._health_loop())

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(_HEALTH_INTERVAL_S)
            self.expire_leases()
            await self._check_health()

    async def _check_health(self) -> None:
        results = await asyncio.gather(*(b.health() for b in self.backends))
        for b, ok in zip(self.backends, results, strict=True):
            if ok != self._healthy[b.name]:
                log.warning("worker %s is %s", b.name, "healthy" if ok else "DOWN")
            self._healthy[b.name] = ok

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        for request_id in self._branches.requests():
            await self.abort(request_id)
        for b in self.backends:
            await b.aclose()
        await self._client.aclose()

    # -- queries -----------------------------------------------------------------------------
    def _pick(self, prefer: str | None = None) -> WorkerBackend:
        healthy = [b for b in self.backends if self._healthy[b.name]]
        for b in healthy:
            if b.name == prefer:
                return b
        if not healthy:
            raise NoWorkerAvailable(f"no healthy worker in pool {self.pool.name}")
        return min(healthy, key=lambda b: self._load[b.name])

    async def render(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]) -> str:
        return await self._pick().apply_chat_template(messages, template_kwargs=template_kwargs)

    async def chat_template_info(self) -> ChatTemplateInfo | None:
        """The workers' chat template, so callers can render locally (None: render here)."""
        backend = self._pick()
        if isinstance(backend, OpenAIHTTPBackend):
            try:
                return await backend.chat_template_info()
            except WorkerError:
                return None  # e.g. vLLM without its model folder: the worker renders it
        return None

    async def count_tokens(self, text: str) -> int:
        return await self._pick().count_tokens(text)

    def node_id(self) -> str:
        """The Ray node this actor runs on (where the loopback URLs it was given lead)."""
        return str(ray.get_runtime_context().get_node_id())

    async def status(self) -> dict[str, Any]:
        return {
            "pool": self.pool.name,
            "actor_pid": os.getpid(),
            "workers": [
                {
                    "name": b.name,
                    "url": b.url if isinstance(b, OpenAIHTTPBackend) else None,
                    "healthy": self._healthy[b.name],
                    "load": self._load[b.name],
                }
                for b in self.backends
            ],
            "inflight_requests": len(self._branches) + len(self._leases),
        }

    async def metrics(self) -> list[WorkerMetrics]:
        return list(await asyncio.gather(*(b.metrics() for b in self.backends)))

    # -- generation --------------------------------------------------------------------------
    async def _place(self, request_id: str, spec: BranchSpec) -> WorkerBackend:
        backend = self._pick(prefer=spec.prefer_worker)
        if spec.prefer_worker is not None:
            await backend.settle(busy_at_most=self._load[backend.name])
        self._load[backend.name] += 1
        return backend

    def _release(self, request_id: str, spec: BranchSpec, backend: WorkerBackend) -> None:
        self._load[backend.name] -= 1

    async def _failed(self, backend: WorkerBackend) -> None:
        self._healthy[backend.name] = await backend.health()

    async def generate(self, job: GenerationJob) -> AsyncIterator[list[BranchChunk]]:
        """Stream every branch of `job` (batches of ready chunks) until all end or abort."""
        self._ensure_health_loop()
        async for batch in self._branches.stream(job):
            yield batch

    async def abort(self, request_id: str, branches: list[int] | None = None) -> int:
        """Abort some or all branches of a request; returns how many were still running."""
        return await self._branches.abort(request_id, branches)

    # -- leases: an API process streams from the worker itself (`actors.direct`) ----------------
    def leased(self, request_id: str, branch: int, worker: str, ttl_s: float) -> None:
        """An API process placed a branch on `worker` and streams it itself: count it as load
        until :meth:`release`, so every replica's placement sees it. A branch cannot outlive its
        request's deadline, so after `ttl_s` the count is dropped even if no release came (the
        API process died)."""
        if worker not in self._load:
            return  # a worker this pool does not have (a stale view): nothing to count
        held = self._leases.setdefault(request_id, {})
        if branch not in held:
            held[branch] = (worker, time.monotonic() + ttl_s)
            self._load[worker] += 1

    def release(self, request_id: str, branches: list[int] | None = None) -> None:
        """Uncount leased branches (all of the request's when `branches` is None)."""
        held = self._leases.get(request_id, {})
        for index in list(held) if branches is None else branches:
            lease = held.pop(index, None)
            if lease is not None:
                self._load[lease[0]] -= 1
        if not held:
            self._leases.pop(request_id, None)

    def expire_leases(self, now: float | None = None) -> int:
        """Drop leases past their expiry; returns how many."""
        now = time.monotonic() if now is None else now
        expired = 0
        for request_id in list(self._leases):
            stale = [i for i, (_, until) in self._leases[request_id].items() if until <= now]
            if stale:
                log.warning("request %s: %d leased branches never released", request_id, len(stale))
                self.release(request_id, stale)
                expired += len(stale)
        return expired

    async def check_worker(self, name: str) -> None:
        """A caller saw this worker fail: re-check its health now."""
        for backend in self.backends:
            if backend.name == name:
                await self._failed(backend)
