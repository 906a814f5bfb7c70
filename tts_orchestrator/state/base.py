"""The state-store contract: request records, branch state and cross-replica cancellation.

Every API replica talks to one shared store. Writes are atomic per field: two tasks updating
different fields of a record, or different branches (or different fields of one branch),
never lose each other's writes. Everything a request writes expires ``record_ttl_s`` after
its last write. A store that cannot reach its backend raises
:class:`~tts_orchestrator.exceptions.StateUnavailable` promptly instead of hanging.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from tts_orchestrator.state.records import RequestRecord


class CancelEvent(BaseModel):
    """A request was cancelled, on whichever replica."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    reason: str


class CancelListener:
    """An async iterator of the cancel events published by every replica.

    Delivery is at least once for watched requests: after the listener loses its
    subscription (the backend restarted), it re-reads the cancel flags of every
    :meth:`watch`-ed request and delivers those that were set meanwhile. Handling a cancel
    must therefore be idempotent. A delivered watched id is unwatched automatically.
    Implementations feed events through :meth:`_deliver` and report their subscription
    through :meth:`_set_ready`.
    """

    def __init__(self) -> None:
        self._events: asyncio.Queue[CancelEvent] = asyncio.Queue()
        self._watched: set[str] = set()
        self._ready = asyncio.Event()
        #: How many times the listener has (re)subscribed.
        self.subscriptions = 0

    def watch(self, request_id: str) -> None:
        """Resync this request's cancel flag whenever the subscription is re-established."""
        self._watched.add(request_id)

    def unwatch(self, request_id: str) -> None:
        self._watched.discard(request_id)

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(self._watched)

    @property
    def ready(self) -> bool:
        """Whether the listener is subscribed right now."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Return once the listener is subscribed (again); wrap in ``asyncio.timeout``."""
        await self._ready.wait()

    def _set_ready(self, ready: bool) -> None:
        if ready:
            self.subscriptions += 1
            self._ready.set()
        else:
            self._ready.clear()

    def _deliver(self, event: CancelEvent) -> None:
        self._watched.discard(event.request_id)
        self._events.put_nowait(event)

    def _deliver_resynced(self, flags: Iterable[tuple[str, str | None]]) -> None:
        """Deliver the (request id, reason) pairs whose flag is set and that are still watched."""
        for request_id, reason in flags:
            if reason is not None and request_id in self._watched:
                self._deliver(CancelEvent(request_id=request_id, reason=reason))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> CancelEvent:
        return await self._events.get()


class StateStore(abc.ABC):
    """Shared request state. Use as an async context manager or call :meth:`aclose`."""

    @abc.abstractmethod
    async def create_request(self, record: RequestRecord) -> None:
        """Store a new record (with its branches). An existing id is an error."""

    @abc.abstractmethod
    async def get_request(self, request_id: str) -> RequestRecord:
        """The record with every branch; raises ``RequestNotFound`` for an unknown id."""

    @abc.abstractmethod
    async def update_request(self, request_id: str, **fields: Any) -> None:
        """Set top-level record fields atomically (not ``id``, ``created_at``, ``branches``).

        Raises ``RequestNotFound`` for an unknown id and ``ValueError`` for an invalid field.
        """

    @abc.abstractmethod
    async def update_branch(self, request_id: str, index: int, **fields: Any) -> None:
        """Set fields of one branch atomically, creating the branch if it is new."""

    @abc.abstractmethod
    async def publish_cancel(self, request_id: str, reason: str) -> None:
        """Flag the request cancelled and tell every replica's listener.

        Raises ``RequestNotFound`` for an unknown id.
        """

    @abc.abstractmethod
    async def is_cancelled(self, request_id: str) -> bool:
        """Whether a cancel was published for this request (seen even by late subscribers)."""

    @abc.abstractmethod
    def cancel_listener(self) -> AbstractAsyncContextManager[CancelListener]:
        """Listen to cancel events from every replica for as long as the context is open."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise ``StateUnavailable`` unless the backend answers."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Release connections; the store is unusable afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
