"""The direct data path: the API process places branches and streams tokens from the workers.

Over Ray every chunk crosses the pool actor and the object store, and even one actor round
trip (a few ms here) is a large share of the orchestrator's budget for the time to first token.
So when the API process can reach a pool's workers (same node for loopback workers, or a
routable URL), nothing on the token path waits for Ray:

* placement is local: the least-loaded healthy worker by the pool actor's last status (fetched
  every ``refresh_s``), corrected by what this process placed and released since;
* the branch streams `/v1/completions` from that worker over this process's connection pool;
* the actor is told of each placement (a few ms later, once the engine request is sent) and
  release without waiting (``leased`` / ``release``), so every replica's view and `/v1/pools`
  count the branch; a lease not released by its request's deadline (this process died) is
  dropped by the actor. A branch over before its placement was told is never told.

Aborting a branch closes its stream, which frees the engine's slot. If the actor is down (it
is restarted by Ray), streaming goes on from the last view.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from tts_orchestrator.actors.branch_tasks import BranchTasks
from tts_orchestrator.actors.calls import call
from tts_orchestrator.actors.jobs import BranchChunk, BranchSpec, GenerationJob
from tts_orchestrator.actors.pool import http_backend
from tts_orchestrator.backends.base import WorkerBackend
from tts_orchestrator.config import PoolConfig
from tts_orchestrator.exceptions import NoWorkerAvailable, TTSError

log = logging.getLogger(__name__)

#: How long after placing a branch the actor is told of it.
LEASE_NOTICE_DELAY_S = 0.005


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class WorkerView:
    """One worker as the pool actor last reported it, plus what this process did since."""

    name: str
    url: str
    healthy: bool
    load: int  # branches on it by the actor's count (every replica's)
    delta: int = 0  # placed minus released here since that count

    @property
    def estimated_load(self) -> int:
        return max(0, self.load + self.delta)


@dataclass
class _Placement:
    worker: str
    notice: asyncio.TimerHandle | None  # the lease not yet told to the actor


class DirectStreams:
    """Places and streams one pool's branches in this API process."""

    def __init__(
        self, pool: PoolConfig, actor: Any, *, lease_ttl_s: float, refresh_s: float = 0.5
    ) -> None:
        self.pool = pool
        self._actor = actor
        self._lease_ttl_s = lease_ttl_s
        self._refresh_s = refresh_s
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256)
        )
        self._views: dict[str, WorkerView] = {}
        self._backends: dict[tuple[str, str], WorkerBackend] = {}
        self._placed: dict[tuple[str, int], _Placement] = {}  # keyed by (request, branch)
        self._branches = BranchTasks(place=self._place, release=self._release, failed=self._failed)
        self._refresher: asyncio.Task[None] | None = None

    # -- the view ------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_loop())

    async def refresh(self) -> None:
        """Take the actor's current health and load of every worker."""
        status = await call(self._actor.status.remote())
        self._views = {
            w["name"]: WorkerView(w["name"], w["url"], bool(w["healthy"]), int(w["load"]))
            for w in status["workers"]
            if w.get("url")
        }

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except TTSError as exc:  # the actor is restarting: keep placing from the last view
                log.debug("pool %s: status unavailable (%s)", self.pool.name, exc)

    def _pick(self, prefer: str | None) -> WorkerView:
        healthy = [v for v in self._views.values() if v.healthy]
        for view in healthy:
            if view.name == prefer:
                return view
        if not healthy:
            raise NoWorkerAvailable(f"no healthy worker in pool {self.pool.name}")
        return min(healthy, key=lambda v: v.estimated_load)

    def _backend(self, view: WorkerView) -> WorkerBackend:
        backend = self._backends.get((view.name, view.url))
        if backend is None:
            cls = http_backend(self.pool.engine)
            backend = cls(url=view.url, model=self.pool.model, client=self._client, name=view.name)
            self._backends[(view.name, view.url)] = backend
        return backend

    # -- branches ------------------------------------------------------------------------------
    async def generate(self, job: GenerationJob) -> AsyncIterator[list[BranchChunk]]:
        async for batch in self._branches.stream(job):
            yield batch

    async def _place(self, request_id: str, spec: BranchSpec) -> WorkerBackend:
        try:
            view = self._pick(spec.prefer_worker)
        except NoWorkerAvailable:
            # This view may be behind the actor (a worker it restarted since): ask before failing.
            with contextlib.suppress(TTSError):
                await self.refresh()
            view = self._pick(spec.prefer_worker)
        backend = self._backend(view)
        if spec.prefer_worker is not None:  # a continuation: let the aborted slot go idle
            await backend.settle(busy_at_most=view.estimated_load)
        view.delta += 1
        # Submitting a Ray call costs ~0.4 ms of this loop: told a moment later, once the
        # engine request is on its way, not before it.
        key = (request_id, spec.index)
        notice = asyncio.get_running_loop().call_later(
            LEASE_NOTICE_DELAY_S, self._tell_leased, key, view.name
        )
        self._placed[key] = _Placement(view.name, notice)
        return backend

    def _tell_leased(self, key: tuple[str, int], worker: str) -> None:
        placement = self._placed.get(key)
        if placement is not None:
            placement.notice = None
            self._actor.leased.remote(*key, worker, self._lease_ttl_s)

    def _release(self, request_id: str, spec: BranchSpec, backend: WorkerBackend) -> None:
        placement = self._placed.pop((request_id, spec.index), None)
        if placement is None:
            return
        view = self._views.get(placement.worker)
        if view is not None:
            view.delta -= 1
        if placement.notice is not None:  # over before the actor heard of it: tell it nothing
            placement.notice.cancel()
            return
        self._actor.release.remote(request_id, [spec.index])

    async def _failed(self, backend: WorkerBackend) -> None:
        view = self._views.get(backend.name)
        if view is not None:
            view.healthy = False  # until the actor's next status says otherwise
        with contextlib.suppress(Exception):
            self._actor.check_worker.remote(backend.name)

    async def abort(self, request_id: str, branches: list[int] | None = None) -> int:
        return await self._branches.abort(request_id, branches)

    async def aclose(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for request_id in self._branches.requests():
            await self.abort(request_id)
        await self._client.aclose()
