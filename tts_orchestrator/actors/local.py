"""What the request path needs of a pool, and a pool that runs in the API process itself.

:class:`PoolClient` is the contract the orchestrator holds: render, count, stream a job's
branches, abort them, report status. :class:`~tts_orchestrator.actors.deploy.PoolHandle`
meets it over a Ray pool actor; :class:`LocalPool` meets it with the same
:class:`~tts_orchestrator.actors.pool.PoolRunner` called in this process (no Ray), over any
workers, e.g. the scripted engine, so the whole request path runs in one event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from tts_orchestrator.actors.jobs import BranchChunk, GenerationJob
from tts_orchestrator.actors.pool import PoolRunner
from tts_orchestrator.backends.base import WorkerBackend, WorkerMetrics
from tts_orchestrator.config import PoolConfig


class PoolClient(Protocol):
    """One pool, as the request path sees it."""

    config: PoolConfig

    async def render(
        self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]
    ) -> str: ...

    async def count_tokens(self, text: str) -> int: ...

    async def metrics(self) -> list[WorkerMetrics]: ...

    async def status(self) -> dict[str, Any]: ...

    async def abort(self, request_id: str, branches: list[int] | None = None) -> int: ...

    def generate(self, job: GenerationJob) -> AsyncIterator[BranchChunk]: ...


class LocalPool:
    """A pool whose runner and workers live in this process."""

    def __init__(self, config: PoolConfig, backends: Sequence[WorkerBackend]) -> None:
        self.config = config
        self.runner = PoolRunner(config, [], backends=backends)

    async def start(self) -> None:
        await self.runner.start()

    async def aclose(self) -> None:
        await self.runner.stop()

    async def render(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]) -> str:
        return await self.runner.render(messages, template_kwargs)

    async def count_tokens(self, text: str) -> int:
        return await self.runner.count_tokens(text)

    async def metrics(self) -> list[WorkerMetrics]:
        return await self.runner.metrics()

    async def status(self) -> dict[str, Any]:
        return {**await self.runner.status(), "data_path": "local"}

    async def abort(self, request_id: str, branches: list[int] | None = None) -> int:
        return await self.runner.abort(request_id, branches)

    async def generate(self, job: GenerationJob) -> AsyncIterator[BranchChunk]:
        async for batch in self.runner.generate(job):
            for item in batch:
                yield item
