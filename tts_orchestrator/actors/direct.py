"""The direct data path: the API process streams tokens from the workers itself.

Over Ray every chunk crosses the pool actor and the object store; the first one alone costs
several milliseconds of the time to first token. When the API process can reach a pool's
workers (same node for loopback workers, or a routable URL), it asks the pool actor for a
lease (placement and load counting stay with the actor, shared by every API replica), streams
`/v1/completions` from the leased worker over its own connection pool, and releases the lease
when the branch ends. Aborting a branch closes its stream, which frees the engine's slot.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from tts_orchestrator.actors.branch_tasks import BranchTasks
from tts_orchestrator.actors.calls import call
from tts_orchestrator.actors.jobs import BranchChunk, BranchSpec, GenerationJob, WorkerLease
from tts_orchestrator.actors.pool import http_backend
from tts_orchestrator.backends.base import WorkerBackend
from tts_orchestrator.config import PoolConfig

log = logging.getLogger(__name__)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DirectStreams:
    """Leases from the pool actor, streams from the workers; one per pool per API process."""

    def __init__(self, pool: PoolConfig, actor: Any) -> None:
        self.pool = pool
        self._actor = actor
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        )
        self._backends: dict[tuple[str, str], WorkerBackend] = {}
        self._leases: dict[str, dict[int, WorkerLease]] = {}
        self._branches = BranchTasks(place=self._place, release=self._release, failed=self._failed)

    def _backend(self, worker: str, url: str) -> WorkerBackend:
        backend = self._backends.get((worker, url))
        if backend is None:
            cls = http_backend(self.pool.engine)
            backend = cls(url=url, model=self.pool.model, client=self._client, name=worker)
            self._backends[(worker, url)] = backend
        return backend

    async def generate(self, job: GenerationJob) -> AsyncIterator[list[BranchChunk]]:
        leases = await call(self._actor.lease.remote(job))
        self._leases[job.request_id] = {lease.branch: lease for lease in leases}
        try:
            async for batch in self._branches.stream(job):
                yield batch
        finally:
            rest = self._leases.pop(job.request_id, {})
            if rest:  # never placed (cancelled before the branch started): give them back
                self._actor.release.remote(job.request_id, list(rest))

    async def _place(self, request_id: str, spec: BranchSpec) -> WorkerBackend:
        lease = self._leases[request_id][spec.index]
        return self._backend(lease.worker, lease.url)

    def _release(self, request_id: str, spec: BranchSpec, backend: WorkerBackend) -> None:
        held = self._leases.get(request_id, {})
        if held.pop(spec.index, None) is not None:
            self._actor.release.remote(request_id, [spec.index])

    async def _failed(self, backend: WorkerBackend) -> None:
        with contextlib.suppress(Exception):
            self._actor.check_worker.remote(backend.name)

    async def abort(self, request_id: str, branches: list[int] | None = None) -> int:
        return await self._branches.abort(request_id, branches)

    async def aclose(self) -> None:
        for request_id in self._branches.requests():
            await self.abort(request_id)
        await self._client.aclose()
