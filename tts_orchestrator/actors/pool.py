"""The pool actor body: owns one pool's worker clients and load counters, runs branch streams.

Plain class; `ray.remote` is applied in `actors.deploy`. Every branch runs as its own task so
it can be aborted alone (early consensus, trimming) or with its request (cancel, disconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from tts_orchestrator.actors.jobs import BranchChunk, BranchSpec, GenerationJob
from tts_orchestrator.backends.base import WorkerBackend, WorkerMetrics
from tts_orchestrator.backends.llamacpp import LlamaCppBackend
from tts_orchestrator.backends.openai_http import OpenAIHTTPBackend
from tts_orchestrator.chat_template import ChatTemplateInfo
from tts_orchestrator.config import EngineKind, PoolConfig
from tts_orchestrator.exceptions import NoWorkerAvailable, TTSError, WorkerError

log = logging.getLogger(__name__)

_HEALTH_INTERVAL_S = 1.0
_DONE = object()


def _http_backend(engine: EngineKind) -> Callable[..., WorkerBackend]:
    if engine == "llama_cpp":
        return LlamaCppBackend
    from tts_orchestrator.backends.vllm import VLLMBackend

    return VLLMBackend


class PoolRunner:
    """Runs generation jobs on the least-loaded healthy worker of one pool."""

    def __init__(self, pool: PoolConfig, worker_urls: list[str]) -> None:
        self.pool = pool
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        )
        self.backends: list[WorkerBackend] = self._build_backends(worker_urls)
        self._load = {b.name: 0 for b in self.backends}
        self._healthy = {b.name: True for b in self.backends}
        self._tasks: dict[str, dict[int, asyncio.Task[None]]] = {}
        self._health_task: asyncio.Task[None] | None = None

    def _build_backends(self, urls: list[str]) -> list[WorkerBackend]:
        if self.pool.engine == "replay":
            from tts_orchestrator.backends.replay import ReplayBackend

            assert self.pool.replay is not None
            return [ReplayBackend(self.pool.replay, name=f"{self.pool.name}/replay")]
        cls = _http_backend(self.pool.engine)
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
        for request_id in list(self._tasks):
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

    async def status(self) -> dict[str, Any]:
        return {
            "pool": self.pool.name,
            "actor_pid": os.getpid(),
            "workers": [
                {"name": b.name, "healthy": self._healthy[b.name], "load": self._load[b.name]}
                for b in self.backends
            ],
            "inflight_requests": len(self._tasks),
        }

    async def metrics(self) -> list[WorkerMetrics]:
        return list(await asyncio.gather(*(b.metrics() for b in self.backends)))

    # -- generation --------------------------------------------------------------------------
    async def generate(self, job: GenerationJob) -> AsyncIterator[list[BranchChunk]]:
        """Stream every branch of `job`, interleaved, until all end or the job is aborted.

        Chunks that are ready together go out as one batch: each yield is a Ray object, and
        under load one object per token costs more than the tokens themselves."""
        self._ensure_health_loop()
        queue: asyncio.Queue[BranchChunk | object] = asyncio.Queue()
        tasks = self._tasks.setdefault(job.request_id, {})
        for spec in job.branches:
            tasks[spec.index] = asyncio.create_task(self._run_branch(job.request_id, spec, queue))
        live = len(job.branches)
        try:
            while live:
                batch: list[BranchChunk] = []
                item = await queue.get()
                while True:
                    if item is _DONE:
                        live -= 1
                    else:
                        assert isinstance(item, BranchChunk)
                        batch.append(item)
                    if queue.empty():
                        break
                    item = queue.get_nowait()
                if batch:
                    yield batch
        finally:
            await self.abort(job.request_id, [s.index for s in job.branches])

    async def _run_branch(
        self, request_id: str, spec: BranchSpec, queue: asyncio.Queue[BranchChunk | object]
    ) -> None:
        backend: WorkerBackend | None = None
        engine_id = f"{request_id}/{spec.index}"
        try:
            backend = self._pick(prefer=spec.prefer_worker)
            if spec.prefer_worker is not None:
                await backend.settle(busy_at_most=self._load[backend.name])
            self._load[backend.name] += 1
            async for chunk in backend.stream_completion(
                spec.prompt, spec.params, request_id=engine_id
            ):
                await queue.put(BranchChunk(branch=spec.index, chunk=chunk, worker=backend.name))
        except asyncio.CancelledError:
            if backend is not None:
                await backend.abort(engine_id)
            raise
        except TTSError as exc:
            if backend is not None:
                self._healthy[backend.name] = await backend.health()
            await queue.put(BranchChunk(branch=spec.index, error=f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # a branch must never take the request down silently
            log.exception("branch %s failed", engine_id)
            await queue.put(BranchChunk(branch=spec.index, error=f"{type(exc).__name__}: {exc}"))
        finally:
            if backend is not None:
                self._load[backend.name] -= 1
            queue.put_nowait(_DONE)

    async def abort(self, request_id: str, branches: list[int] | None = None) -> int:
        """Abort some or all branches of a request; returns how many were still running."""
        tasks = self._tasks.get(request_id, {})
        targets = [i for i in (branches if branches is not None else list(tasks)) if i in tasks]
        running = [tasks.pop(i) for i in targets]
        if not tasks:
            self._tasks.pop(request_id, None)
        live = [t for t in running if not t.done()]
        for t in live:
            t.cancel()
        for t in live:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        return len(live)
