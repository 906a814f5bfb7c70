"""A deterministic in-process :class:`StateStore` for unit tests of the components above it.

It keeps the Redis store's semantics (field-wise updates, branch upserts, TTLs measured on an
injectable clock, first cancel reason kept, cancel events to every listener) without a
server. Stores built with ``shared=`` see the same data, like API replicas on one Redis.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from tts_orchestrator.exceptions import RequestNotFound, StateUnavailable, TTSError
from tts_orchestrator.state.base import CancelEvent, CancelListener, StateStore
from tts_orchestrator.state.records import (
    IMMUTABLE_BRANCH_FIELDS,
    IMMUTABLE_REQUEST_FIELDS,
    BranchRecord,
    RequestRecord,
    json_update,
)


@dataclass
class _Entry:
    fields: dict[str, Any]
    branches: dict[int, dict[str, Any]]
    expires_at: float
    cancel_reason: str | None = None


@dataclass
class _Shared:
    entries: dict[str, _Entry] = field(default_factory=dict)
    listeners: set[CancelListener] = field(default_factory=set)


class InMemoryStateStore(StateStore):
    def __init__(
        self,
        *,
        record_ttl_s: float = 86400.0,
        clock: Callable[[], float] = time.monotonic,
        shared: InMemoryStateStore | None = None,
    ):
        self._ttl_s = record_ttl_s
        self._clock = clock
        self._shared: _Shared = shared._shared if shared is not None else _Shared()
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StateUnavailable("state store is closed")

    def _live(self, request_id: str) -> _Entry:
        self._check_open()
        entry = self._shared.entries.get(request_id)
        if entry is None or entry.expires_at <= self._clock():
            self._shared.entries.pop(request_id, None)
            raise RequestNotFound(f"no request with id {request_id!r}")
        return entry

    def _touch(self, entry: _Entry) -> None:
        entry.expires_at = self._clock() + self._ttl_s

    async def create_request(self, record: RequestRecord) -> None:
        self._check_open()
        try:
            self._live(record.id)
        except RequestNotFound:
            pass
        else:
            raise TTSError(f"request {record.id} already exists", code="duplicate_request")
        fields = record.model_dump(mode="json")
        branches = {b["index"]: b for b in fields.pop("branches")}
        self._shared.entries[record.id] = _Entry(
            fields=fields, branches=branches, expires_at=self._clock() + self._ttl_s
        )

    async def get_request(self, request_id: str) -> RequestRecord:
        entry = self._live(request_id)
        branches = [entry.branches[i] for i in sorted(entry.branches)]
        return RequestRecord.model_validate({**entry.fields, "branches": branches})

    async def update_request(self, request_id: str, **fields: Any) -> None:
        update = json_update(RequestRecord, fields, immutable=IMMUTABLE_REQUEST_FIELDS)
        entry = self._live(request_id)
        entry.fields.update(update)
        self._touch(entry)

    async def update_branch(self, request_id: str, index: int, **fields: Any) -> None:
        if index < 0:
            raise ValueError(f"branch index must be >= 0, got {index}")
        update = json_update(BranchRecord, fields, immutable=IMMUTABLE_BRANCH_FIELDS)
        entry = self._live(request_id)
        entry.branches.setdefault(index, {"index": index}).update(update)
        self._touch(entry)

    async def publish_cancel(self, request_id: str, reason: str) -> None:
        entry = self._live(request_id)
        if entry.cancel_reason is None:
            entry.cancel_reason = reason
        for listener in list(self._shared.listeners):
            listener._deliver(CancelEvent(request_id=request_id, reason=reason))

    async def is_cancelled(self, request_id: str) -> bool:
        try:
            return self._live(request_id).cancel_reason is not None
        except RequestNotFound:
            return False

    @asynccontextmanager
    async def cancel_listener(self) -> AsyncIterator[CancelListener]:
        self._check_open()
        listener = _MemoryCancelListener()
        self._shared.listeners.add(listener)
        try:
            yield listener
        finally:
            self._shared.listeners.discard(listener)

    async def ping(self) -> None:
        self._check_open()

    async def aclose(self) -> None:
        self._closed = True


class _MemoryCancelListener(CancelListener):
    """Never loses its subscription, so it has nothing to resync."""

    def __init__(self) -> None:
        super().__init__()
        self._set_ready(True)
