"""RedisStateStore against a real redis-server started by EmbeddedRedis.

Two store instances on one server stand in for two API replicas. Fault tests run their own
server so that killing it does not disturb the rest of the suite.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from tts_orchestrator.config import RedisConfig
from tts_orchestrator.exceptions import RequestNotFound, StateUnavailable, TTSError
from tts_orchestrator.state import redis_store
from tts_orchestrator.state.base import CancelEvent, CancelListener
from tts_orchestrator.state.embedded import EmbeddedRedis
from tts_orchestrator.state.records import (
    BranchRecord,
    Endpoint,
    RecordStatus,
    RecordUsage,
    RequestRecord,
)
from tts_orchestrator.state.redis_store import RedisStateStore, open_state_store
from tts_orchestrator.state.schema import KeySchema

pytestmark = pytest.mark.integration

SOCKET_TIMEOUT_S = 0.5
RECORD_TTL_S = 120


def _config(url: str | None) -> RedisConfig:
    return RedisConfig.model_validate(
        {"url": url, "record_ttl_s": RECORD_TTL_S, "socket_timeout_s": SOCKET_TIMEOUT_S}
    )


async def _next_event(listener: CancelListener, within_s: float = 2.0) -> CancelEvent:
    async with asyncio.timeout(within_s):
        return await anext(listener)


def _record(request_id: str, *, n_branches: int = 2) -> RequestRecord:
    return RequestRecord(
        id=request_id,
        model="smollm2-135m-instruct",
        pool="cpu",
        endpoint=Endpoint.CHAT,
        params={"temperature": 0.7, "max_tokens": 64, "tts": {"n_branches": n_branches}},
        replica_id="replica-a",
        branches=[BranchRecord(index=i, seed=100 + i) for i in range(n_branches)],
    )


@pytest.fixture(scope="session")
async def redis_server() -> AsyncIterator[EmbeddedRedis]:
    async with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def keys() -> KeySchema:
    """A fresh key prefix per test, so tests sharing the server never see each other's keys."""
    return KeySchema(prefix=f"t{uuid.uuid4().hex[:10]}")


@pytest.fixture
async def store(redis_server: EmbeddedRedis, keys: KeySchema) -> AsyncIterator[RedisStateStore]:
    async with RedisStateStore(redis_server.url, config=_config(redis_server.url), keys=keys) as s:
        yield s


@pytest.fixture
async def replica_b(redis_server: EmbeddedRedis, keys: KeySchema) -> AsyncIterator[RedisStateStore]:
    async with RedisStateStore(redis_server.url, config=_config(redis_server.url), keys=keys) as s:
        yield s


@pytest.fixture
async def raw(redis_server: EmbeddedRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_record_round_trips_with_branches(store: RedisStateStore) -> None:
    record = _record("req-roundtrip", n_branches=3)
    await store.create_request(record)
    assert await store.get_request("req-roundtrip") == record


async def test_a_record_with_the_maximum_fan_out_round_trips(store: RedisStateStore) -> None:
    record = _record("req-wide", n_branches=256)  # TtsDefaults.max_branches caps at 256
    await store.create_request(record)
    assert await store.get_request("req-wide") == record


async def test_update_request_changes_only_the_given_fields(store: RedisStateStore) -> None:
    record = _record("req-update")
    await store.create_request(record)
    await store.update_request(
        "req-update",
        status=RecordStatus.FINISHED,
        answer="42",
        usage=RecordUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
        timings={"ttft_s": 0.125, "total_s": 1.5},
    )
    got = await store.get_request("req-update")
    expected = record.model_copy(
        update={
            "status": RecordStatus.FINISHED,
            "answer": "42",
            "usage": RecordUsage(prompt_tokens=10, completion_tokens=5, total_tokens=15),
            "timings": {"ttft_s": 0.125, "total_s": 1.5},
        }
    )
    assert got == expected


async def test_update_branch_upserts_a_new_branch(store: RedisStateStore) -> None:
    await store.create_request(_record("req-newbranch", n_branches=1))
    await store.update_branch("req-newbranch", 5, tokens=3, status="running")
    branches = (await store.get_request("req-newbranch")).branches
    assert [b.index for b in branches] == [0, 5]
    assert branches[1] == BranchRecord(index=5, tokens=3, status=RecordStatus.RUNNING)


async def test_duplicate_create_is_refused(store: RedisStateStore) -> None:
    await store.create_request(_record("req-dup"))
    with pytest.raises(TTSError, match="already exists"):
        await store.create_request(_record("req-dup"))


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"status": "exploded"}, id="invalid-status"),
        pytest.param({"colour": "red"}, id="unknown-field"),
        pytest.param({"id": "other"}, id="immutable-id"),
        pytest.param({"branches": []}, id="branches-via-update_request"),
    ],
)
async def test_invalid_update_raises_and_writes_nothing(
    store: RedisStateStore, fields: dict[str, Any]
) -> None:
    record = _record("req-invalid")
    await store.create_request(record)
    with pytest.raises(ValueError):
        await store.update_request("req-invalid", **fields)
    assert await store.get_request("req-invalid") == record


_UNKNOWN_ID_CALLS: list[Any] = [
    pytest.param(lambda s, rid: s.get_request(rid), id="get_request"),
    pytest.param(lambda s, rid: s.update_request(rid, status="running"), id="update_request"),
    pytest.param(lambda s, rid: s.update_branch(rid, 0, tokens=1), id="update_branch"),
    pytest.param(lambda s, rid: s.publish_cancel(rid, "user"), id="publish_cancel"),
]


@pytest.mark.parametrize("call", _UNKNOWN_ID_CALLS)
@pytest.mark.parametrize("request_id", ["req-never-created", "bad id {with} braces"])
async def test_unknown_id_raises_request_not_found(
    store: RedisStateStore,
    call: Callable[[RedisStateStore, str], Awaitable[Any]],
    request_id: str,
) -> None:
    with pytest.raises(RequestNotFound):
        await call(store, request_id)


async def test_update_never_resurrects_an_expired_record(
    store: RedisStateStore, raw: Redis, keys: KeySchema
) -> None:
    await store.create_request(_record("req-expired"))
    await raw.delete(keys.request("req-expired"))  # what expiry does
    with pytest.raises(RequestNotFound):
        await store.update_branch("req-expired", 0, tokens=9)
    assert await raw.exists(keys.branches("req-expired"), keys.request("req-expired")) == 1


async def test_concurrent_writers_lose_nothing(
    store: RedisStateStore, replica_b: RedisStateStore
) -> None:
    """Many tasks on two replicas write different fields of the record and of each branch."""
    n_branches, steps = 8, 20
    await store.create_request(_record("req-race", n_branches=n_branches))

    async def count_tokens(s: RedisStateStore, index: int) -> None:
        for step in range(1, steps + 1):
            await s.update_branch("req-race", index, tokens=step * 10 + index)

    async def set_answer(s: RedisStateStore, index: int) -> None:
        for step in range(steps):
            await s.update_branch("req-race", index, answer=f"{index}/{step}")

    async def finish(s: RedisStateStore, index: int) -> None:
        for _ in range(steps):
            await s.update_branch("req-race", index, finish_reason="stop", status="finished")

    async def record_fields(s: RedisStateStore, name: str, value: Any) -> None:
        for _ in range(steps):
            await s.update_request("req-race", **{name: value})

    replicas = (store, replica_b)
    async with asyncio.TaskGroup() as tg:
        for i in range(n_branches):
            for j, writer in enumerate((count_tokens, set_answer, finish)):
                tg.create_task(writer(replicas[(i + j) % 2], i))
        tg.create_task(record_fields(store, "answer", "A"))
        tg.create_task(record_fields(replica_b, "finish_reason", "stop"))
        tg.create_task(record_fields(store, "timings", {"total_s": 2.0}))
        tg.create_task(record_fields(replica_b, "vote", {"winner": "A"}))

    got = await store.get_request("req-race")
    assert (got.answer, got.finish_reason, got.timings, got.vote) == (
        "A",
        "stop",
        {"total_s": 2.0},
        {"winner": "A"},
    )
    assert got.branches == [
        BranchRecord(
            index=i,
            seed=100 + i,
            tokens=steps * 10 + i,
            answer=f"{i}/{steps - 1}",
            finish_reason="stop",
            status=RecordStatus.FINISHED,
        )
        for i in range(n_branches)
    ]


async def test_every_key_has_a_ttl_that_writes_refresh(
    store: RedisStateStore, raw: Redis, keys: KeySchema
) -> None:
    await store.create_request(_record("req-ttl"))
    await store.update_branch("req-ttl", 0, tokens=1)
    await store.publish_cancel("req-ttl", "user")
    written = [key async for key in raw.scan_iter(match=f"{keys.prefix}:*")]
    assert sorted(written) == sorted(
        [keys.request("req-ttl"), keys.branches("req-ttl"), keys.cancel_flag("req-ttl")]
    )
    for key in written:
        assert 0 < await raw.ttl(key) <= RECORD_TTL_S, key
        await raw.expire(key, 5)
    await store.update_request("req-ttl", status="cancelled")
    for key in written:
        assert await raw.ttl(key) > RECORD_TTL_S - 5, key


async def test_cancel_on_one_replica_reaches_listeners_on_every_replica(
    store: RedisStateStore, replica_b: RedisStateStore
) -> None:
    await store.create_request(_record("req-cancel"))
    async with store.cancel_listener() as on_a, replica_b.cancel_listener() as on_b:
        await replica_b.publish_cancel("req-cancel", "client disconnected")
        expected = ("req-cancel", "client disconnected")
        for listener in (on_a, on_b):
            event = await _next_event(listener)
            assert (event.request_id, event.reason) == expected
    assert await store.is_cancelled("req-cancel")


async def test_late_subscriber_sees_the_cancel_flag(
    store: RedisStateStore, replica_b: RedisStateStore
) -> None:
    await store.create_request(_record("req-late"))
    await store.create_request(_record("req-other"))
    assert not await replica_b.is_cancelled("req-late")
    await store.publish_cancel("req-late", "DELETE")
    await store.publish_cancel("req-late", "second reason")
    assert await replica_b.is_cancelled("req-late")
    assert await replica_b.cancel_reasons(["req-late", "req-other"]) == ["DELETE", None]
    assert not await replica_b.is_cancelled("req-other")


# --- faults: each test runs its own server ------------------------------------------------


@pytest.fixture
async def own_server() -> AsyncIterator[EmbeddedRedis]:
    async with EmbeddedRedis() as server:
        yield server


async def _elapsed_until_unavailable(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    with pytest.raises(StateUnavailable):
        await call()
    return time.perf_counter() - start


async def test_killed_redis_fails_fast_and_the_same_store_recovers(
    own_server: EmbeddedRedis,
) -> None:
    async with RedisStateStore(own_server.url, config=_config(own_server.url)) as store:
        await store.create_request(_record("req-fault"))
        await own_server.stop(kill=True)
        for call in (store.ping, lambda: store.get_request("req-fault")):
            assert await _elapsed_until_unavailable(call) < SOCKET_TIMEOUT_S
        await own_server.start()  # same port, empty (nothing persisted)
        await store.ping()
        with pytest.raises(RequestNotFound):
            await store.get_request("req-fault")
        await store.create_request(_record("req-fault"))
        assert (await store.get_request("req-fault")).id == "req-fault"


async def test_hung_redis_fails_within_the_socket_timeout(own_server: EmbeddedRedis) -> None:
    async with RedisStateStore(own_server.url, config=_config(own_server.url)) as store:
        await store.create_request(_record("req-hung"))
        assert own_server.pid is not None
        os.kill(own_server.pid, signal.SIGSTOP)
        try:
            elapsed = await _elapsed_until_unavailable(lambda: store.get_request("req-hung"))
        finally:
            os.kill(own_server.pid, signal.SIGCONT)
        assert SOCKET_TIMEOUT_S * 0.8 < elapsed < 2 * SOCKET_TIMEOUT_S + 0.3
        assert (await store.get_request("req-hung")).id == "req-hung"


async def test_cancel_listener_survives_a_redis_restart(
    own_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long first backoff leaves a window in which a cancel is published while the
    # listener is not subscribed: it must still arrive, through the flag resync.
    monkeypatch.setattr(redis_store._RedisCancelListener, "backoff_initial_s", 0.6)
    config = _config(own_server.url)
    async with (
        RedisStateStore(own_server.url, config=config) as replica_a,
        RedisStateStore(own_server.url, config=config) as replica_b,
        replica_a.cancel_listener() as listener,
    ):
        listener.watch("req-missed")
        await own_server.stop(kill=True)
        await own_server.start()
        await replica_b.create_request(_record("req-missed"))
        await replica_b.publish_cancel("req-missed", "cancelled during the outage")
        assert listener.subscriptions == 1  # published before the listener re-subscribed
        event = await _next_event(listener, within_s=5)
        assert (event.request_id, event.reason) == ("req-missed", "cancelled during the outage")
        assert listener.watched == frozenset()  # delivered, hence no longer watched

        # ...and live events flow again on the new subscription.
        await replica_b.create_request(_record("req-after"))
        await replica_b.publish_cancel("req-after", "user")
        assert (await _next_event(listener)).request_id == "req-after"
        assert listener.subscriptions == 2


async def test_cancel_listener_notices_a_silent_server_and_resubscribes(
    own_server: EmbeddedRedis,
) -> None:
    config = _config(own_server.url)
    async with (
        RedisStateStore(own_server.url, config=config) as replica_a,
        RedisStateStore(own_server.url, config=config) as replica_b,
        replica_a.cancel_listener() as listener,
    ):
        assert own_server.pid is not None
        os.kill(own_server.pid, signal.SIGSTOP)  # connections stay open, nothing answers
        try:
            deadline = time.monotonic() + 5
            while listener.ready and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert not listener.ready  # its own pings found the server dead
        finally:
            os.kill(own_server.pid, signal.SIGCONT)
        async with asyncio.timeout(5):
            await listener.wait_ready()
        assert listener.subscriptions == 2
        await replica_b.create_request(_record("req-silent"))
        await replica_b.publish_cancel("req-silent", "user")
        assert (await _next_event(listener)).request_id == "req-silent"


async def test_cancel_listener_needs_redis_to_start(own_server: EmbeddedRedis) -> None:
    async with RedisStateStore(own_server.url, config=_config(own_server.url)) as store:
        await own_server.stop(kill=True)
        with pytest.raises(StateUnavailable):
            async with store.cancel_listener():
                pass


# --- the embedded server itself -------------------------------------------------------------


async def test_open_state_store_without_url_runs_a_private_server() -> None:
    async with open_state_store(_config(None)) as store:
        await store.create_request(_record("req-embedded"))
        assert (await store.get_request("req-embedded")).id == "req-embedded"
        port = int(store.client.get_connection_kwargs()["port"])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_embedded_server_stops_and_cleans_up() -> None:
    server = EmbeddedRedis()
    async with server:
        pid = server.pid
        assert pid is not None
        assert _alive(pid)
        workdir = server.workdir
        assert workdir is not None
        assert workdir.is_dir()
    assert not server.running
    assert not _alive(pid)
    assert not workdir.exists()


async def test_embedded_server_on_a_taken_port_reports_why(redis_server: EmbeddedRedis) -> None:
    with pytest.raises(StateUnavailable, match="did not start") as info:
        async with EmbeddedRedis(port=redis_server.port):
            pass
    assert "in use" in str(info.value) or "bind" in str(info.value).lower()


_ORPHAN_PARENT = textwrap.dedent(
    """
    import asyncio, sys
    from tts_orchestrator.state.embedded import EmbeddedRedis

    async def main():
        async with EmbeddedRedis() as server:
            print(server.pid, server.workdir, flush=True)
            await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def test_embedded_server_dies_with_a_killed_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_PARENT], stdout=subprocess.PIPE, text=True
    )
    workdir = None
    try:
        assert parent.stdout is not None
        pid, workdir = parent.stdout.readline().split()
        redis_pid = int(pid)
        assert _alive(redis_pid)
        parent.kill()
        parent.wait(5)
        deadline = time.monotonic() + 3
        while _alive(redis_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(redis_pid)
    finally:
        parent.kill()
        parent.wait(5)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)  # a SIGKILL-ed parent cannot clean up


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_listener_stays_subscribed_through_a_quiet_period(store: RedisStateStore) -> None:
    """Regression: the PING answer is a subscribe-type message; ignoring it made a healthy
    listener believe Redis was gone and re-subscribe every few seconds."""
    async with store.cancel_listener() as listener:
        await asyncio.sleep(4 * max(SOCKET_TIMEOUT_S, 0.5))
        assert listener.subscriptions == 1
