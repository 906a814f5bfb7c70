"""Merge a request's generation jobs into one stream, with per-branch abort and continuation.

A branch starts in the request's first job. Abort-and-continue (a trim, a spent thinking
budget) aborts it there and starts a one-branch continuation job whose prompt is
`prompt + generated + injected`; from then on that branch's chunks come from the new job, and
late chunks of the superseded one are dropped. Closing the streams cancels every job, which
releases every engine request.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from tts_orchestrator.actors.jobs import BranchChunk, BranchSpec, GenerationJob
from tts_orchestrator.actors.local import PoolClient
from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.exceptions import TTSError


@dataclass(frozen=True)
class _JobEnd:
    job_id: str


class BranchStreams:
    def __init__(self, pool: PoolClient, request_id: str) -> None:
        self.pool = pool
        self.request_id = request_id
        self._queue: asyncio.Queue[tuple[str, BranchChunk] | _JobEnd] = asyncio.Queue()
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._owner: dict[int, str] = {}
        self._continuations = 0

    def start(self, job: GenerationJob) -> None:
        for b in job.branches:
            self._owner[b.index] = job.request_id
        self._pumps[job.request_id] = asyncio.create_task(self._pump(job))

    async def _pump(self, job: GenerationJob) -> None:
        try:
            async for item in self.pool.generate(job):
                if self._owner.get(item.branch) == job.request_id:
                    self._queue.put_nowait((job.request_id, item))
        except TTSError as exc:
            for b in job.branches:
                if self._owner.get(b.index) == job.request_id:
                    error = BranchChunk(branch=b.index, error=str(exc))
                    self._queue.put_nowait((job.request_id, error))
        finally:
            self._queue.put_nowait(_JobEnd(job.request_id))

    async def next(self) -> BranchChunk | None:
        """The next chunk of any live branch; None once every job has ended."""
        while True:
            if not self._pumps and self._queue.empty():
                return None
            entry = await self._queue.get()
            if isinstance(entry, _JobEnd):
                self._pumps.pop(entry.job_id, None)
                continue
            job_id, item = entry
            # Queued before its branch was aborted or continued elsewhere: stale.
            if self._owner.get(item.branch) != job_id:
                continue
            return item

    async def abort(self, branches: list[int]) -> None:
        """Abort these branches in whichever job runs them now."""
        by_job: dict[str, list[int]] = {}
        for i in branches:
            job_id = self._owner.pop(i, None)
            if job_id is not None:
                by_job.setdefault(job_id, []).append(i)
        await asyncio.gather(*(self.pool.abort(j, idx) for j, idx in by_job.items()))

    async def continue_branch(
        self, index: int, prompt: str, params: SamplingParams, *, worker: str | None
    ) -> None:
        """Abort branch `index` where it runs and continue it from `prompt`, on the same
        worker when possible (its prefix cache holds everything but the injected text)."""
        await self.abort([index])
        self._continuations += 1
        job = GenerationJob(
            request_id=f"{self.request_id}.c{self._continuations}",
            branches=[BranchSpec(index=index, prompt=prompt, params=params, prefer_worker=worker)],
        )
        self.start(job)

    async def aclose(self) -> None:
        pumps = list(self._pumps.values())
        for task in pumps:
            task.cancel()
        for task in pumps:
            with contextlib.suppress(BaseException):
                await task
        self._pumps.clear()
