"""InMemoryStateStore keeps the contract of the Redis store (see tests/integration)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tts_orchestrator.exceptions import RequestNotFound, StateUnavailable, TTSError
from tts_orchestrator.state.memory import InMemoryStateStore
from tts_orchestrator.state.records import BranchRecord, Endpoint, RecordStatus, RequestRecord


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(request_id: str = "req-1", *, n_branches: int = 2) -> RequestRecord:
    return RequestRecord(
        id=request_id,
        model="m",
        pool="p",
        endpoint=Endpoint.COMPLETIONS,
        branches=[BranchRecord(index=i, seed=i) for i in range(n_branches)],
    )


async def test_round_trip_and_field_updates() -> None:
    store = InMemoryStateStore()
    record = _record()
    await store.create_request(record)
    await store.update_request("req-1", status="finished", answer="7")
    await store.update_branch("req-1", 1, tokens=4, aborted=True, abort_reason="consensus")
    await store.update_branch("req-1", 3, status="running")
    got = await store.get_request("req-1")
    assert got.model_dump(exclude={"branches"}) == record.model_copy(
        update={"status": RecordStatus.FINISHED, "answer": "7"}
    ).model_dump(exclude={"branches"})
    assert got.branches == [
        BranchRecord(index=0, seed=0),
        BranchRecord(index=1, seed=1, tokens=4, aborted=True, abort_reason="consensus"),
        BranchRecord(index=3, status=RecordStatus.RUNNING),
    ]


async def test_returned_records_are_copies() -> None:
    store = InMemoryStateStore()
    await store.create_request(_record())
    got = await store.get_request("req-1")
    got.params["leak"] = True
    assert (await store.get_request("req-1")).params == {}


async def test_duplicate_create_is_refused() -> None:
    store = InMemoryStateStore()
    await store.create_request(_record())
    with pytest.raises(TTSError, match="already exists"):
        await store.create_request(_record())


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s: s.get_request("nope"), id="get_request"),
        pytest.param(lambda s: s.update_request("nope", answer="x"), id="update_request"),
        pytest.param(lambda s: s.update_branch("nope", 0, tokens=1), id="update_branch"),
        pytest.param(lambda s: s.publish_cancel("nope", "user"), id="publish_cancel"),
    ],
)
async def test_unknown_id_raises_request_not_found(
    call: Callable[[InMemoryStateStore], Awaitable[Any]],
) -> None:
    with pytest.raises(RequestNotFound):
        await call(InMemoryStateStore())


async def test_records_expire_ttl_after_their_last_write() -> None:
    clock = FakeClock()
    store = InMemoryStateStore(record_ttl_s=10, clock=clock)
    await store.create_request(_record())
    clock.now += 9
    await store.update_branch("req-1", 0, tokens=1)  # refreshes the TTL
    clock.now += 9
    assert (await store.get_request("req-1")).branches[0].tokens == 1
    clock.now += 1
    with pytest.raises(RequestNotFound):
        await store.get_request("req-1")
    assert not await store.is_cancelled("req-1")


async def test_cancel_reaches_listeners_of_every_replica_and_keeps_the_first_reason() -> None:
    replica_a = InMemoryStateStore()
    replica_b = InMemoryStateStore(shared=replica_a)
    await replica_a.create_request(_record())
    async with replica_a.cancel_listener() as on_a, replica_b.cancel_listener() as on_b:
        assert on_a.ready
        assert on_b.ready
        await replica_b.publish_cancel("req-1", "client disconnected")
        await replica_a.publish_cancel("req-1", "DELETE")
        for listener in (on_a, on_b):
            async with asyncio.timeout(1):
                events = [await anext(listener) for _ in range(2)]
            assert [e.reason for e in events] == ["client disconnected", "DELETE"]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await anext(on_a)
    assert await replica_b.is_cancelled("req-1")
    assert not await replica_b.is_cancelled("req-2")


async def test_listener_is_an_async_iterator() -> None:
    store = InMemoryStateStore()
    await store.create_request(_record())
    async with store.cancel_listener() as listener:
        await store.publish_cancel("req-1", "user")
        async with asyncio.timeout(1):
            async for event in listener:
                assert event.request_id == "req-1"
                break


async def test_closed_store_is_unavailable() -> None:
    store = InMemoryStateStore()
    async with store:
        await store.ping()
    with pytest.raises(StateUnavailable):
        await store.ping()
