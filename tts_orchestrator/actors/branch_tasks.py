"""Run each branch of a generation job as its own task and merge what they stream.

Used on both sides of a pool: inside the pool actor (the Ray data path) and in the API process
when it streams from the workers itself (`actors.direct`). Each branch is a task so it can be
aborted alone (early consensus, trimming) or with its request (cancel, disconnect); cancelling a
task aborts its engine request. Where a branch runs and what happens when it ends are the
caller's: `place` picks (and counts) a worker for a request's branch, `release` uncounts it,
`failed` reacts to a worker error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from tts_orchestrator.actors.jobs import BranchChunk, BranchSpec, GenerationJob
from tts_orchestrator.backends.base import WorkerBackend
from tts_orchestrator.exceptions import TTSError

log = logging.getLogger(__name__)

Place = Callable[[str, BranchSpec], Awaitable[WorkerBackend]]
Release = Callable[[str, BranchSpec, WorkerBackend], None]
Failed = Callable[[WorkerBackend], Awaitable[None]]

_DONE = object()


class BranchTasks:
    """The running branch tasks of every request on one side of one pool."""

    def __init__(self, *, place: Place, release: Release, failed: Failed) -> None:
        self._place = place
        self._release = release
        self._failed = failed
        self._tasks: dict[str, dict[int, asyncio.Task[None]]] = {}

    def __len__(self) -> int:
        """Requests with a branch still running."""
        return len(self._tasks)

    def requests(self) -> list[str]:
        return list(self._tasks)

    async def stream(self, job: GenerationJob) -> AsyncIterator[list[BranchChunk]]:
        """Every branch of `job`, interleaved, until all end or the job is aborted.

        Chunks that are ready together come as one batch (over Ray each yield is an object,
        and under load one object per token costs more than the tokens themselves)."""
        queue: asyncio.Queue[BranchChunk | object] = asyncio.Queue()
        tasks = self._tasks.setdefault(job.request_id, {})
        for spec in job.branches:
            tasks[spec.index] = asyncio.create_task(self._run(job.request_id, spec, queue))
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

    async def _run(
        self, request_id: str, spec: BranchSpec, queue: asyncio.Queue[BranchChunk | object]
    ) -> None:
        backend: WorkerBackend | None = None
        engine_id = f"{request_id}/{spec.index}"
        try:
            backend = await self._place(request_id, spec)
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
                await self._failed(backend)
            await queue.put(BranchChunk(branch=spec.index, error=f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # a branch must never take the request down silently
            log.exception("branch %s failed", engine_id)
            await queue.put(BranchChunk(branch=spec.index, error=f"{type(exc).__name__}: {exc}"))
        finally:
            if backend is not None:
                self._release(request_id, spec, backend)
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
