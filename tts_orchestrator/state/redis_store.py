"""The state store on Redis (``redis.asyncio``), failing fast and recovering by itself.

A record is a Redis hash of ``field -> JSON``; its branches are a second hash of
``"<index>:<field>" -> JSON``. Every write is one Lua script that checks the record exists,
sets the fields with HSET and refreshes the TTLs, so concurrent writers of different fields
or branches never overwrite each other and a write never resurrects an expired record.

Failing fast: sockets time out after ``socket_timeout_s``, the client never retries, and each
operation runs under an overall deadline; every Redis or socket error becomes
``StateUnavailable``. Recovery is the connection pool's: the next operation after Redis comes
back opens a fresh connection. The cancel listener re-subscribes with jittered backoff and
detects a silent server with its own pings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tts_orchestrator.config import RedisConfig
from tts_orchestrator.exceptions import RequestNotFound, StateUnavailable, TTSError
from tts_orchestrator.state.base import CancelEvent, CancelListener, StateStore
from tts_orchestrator.state.embedded import EmbeddedRedis, resolve_data_dir
from tts_orchestrator.state.records import (
    IMMUTABLE_BRANCH_FIELDS,
    IMMUTABLE_REQUEST_FIELDS,
    BranchRecord,
    RequestRecord,
    json_update,
)
from tts_orchestrator.state.schema import (
    KeySchema,
    KeyTtls,
    branch_field,
    is_valid_request_id,
    parse_branch_field,
)

log = logging.getLogger(__name__)

# KEYS: record, branches. ARGV: ttl, number of record args, record pairs..., branch pairs...
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ttl = ARGV[1]
local split = 2 + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, split))
redis.call('EXPIRE', KEYS[1], ttl)
if #ARGV > split then
  redis.call('HSET', KEYS[2], unpack(ARGV, split + 1))
  redis.call('EXPIRE', KEYS[2], ttl)
end
return 1
"""

# KEYS: record, branches, cancel flag. ARGV: ttl, target key index (1 or 2), field/value pairs...
_WRITE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[tonumber(ARGV[2])], unpack(ARGV, 3))
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return 1
"""

# KEYS: record, cancel flag. ARGV: ttl, reason, channel. The first reason is kept.
_CANCEL_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[1])
return redis.call('PUBLISH', ARGV[3], ARGV[2])
"""

_RECORD_KEY, _BRANCHES_KEY = 1, 2


class RedisStateStore(StateStore):
    """:class:`StateStore` over one Redis server (or a proxy / cluster endpoint)."""

    def __init__(self, url: str, *, config: RedisConfig, keys: KeySchema | None = None):
        self._keys = keys or KeySchema()
        self._ttls = KeyTtls.from_config(config)
        self._timeout_s = config.socket_timeout_s
        # Connect + one read, plus slack: the sockets' own timeouts should fire first.
        self._op_deadline_s = 2 * config.socket_timeout_s + 0.25
        self._client: Redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=config.socket_timeout_s,
            socket_connect_timeout=config.socket_timeout_s,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
        )
        self._create = self._client.register_script(_CREATE_LUA)
        self._write = self._client.register_script(_WRITE_LUA)
        self._cancel = self._client.register_script(_CANCEL_LUA)

    @property
    def keys(self) -> KeySchema:
        return self._keys

    @property
    def client(self) -> Redis:
        """The underlying client, for components that own other keys of :class:`KeySchema`."""
        return self._client

    @asynccontextmanager
    async def _guard(self, op: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._op_deadline_s):
                yield
        except RedisError as exc:
            raise StateUnavailable(f"state store unavailable ({op}): {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise StateUnavailable(
                f"state store unavailable ({op}): no answer within {self._op_deadline_s:.2f}s"
            ) from exc

    def _request_keys(self, request_id: str) -> list[str]:
        k = self._keys
        return [k.request(request_id), k.branches(request_id), k.cancel_flag(request_id)]

    async def create_request(self, record: RequestRecord) -> None:
        fields = record.model_dump(mode="json")
        branches: list[dict[str, Any]] = fields.pop("branches")
        record_args = _pairs(fields.items())
        branch_args = _pairs(
            (branch_field(b["index"], name), value) for b in branches for name, value in b.items()
        )
        keys = self._request_keys(record.id)[:2]
        async with self._guard("create_request"):
            created = await self._create(
                keys=keys, args=[self._ttls.record_s, len(record_args), *record_args, *branch_args]
            )
        if not created:
            raise TTSError(f"request {record.id} already exists", code="duplicate_request")

    async def get_request(self, request_id: str) -> RequestRecord:
        if not is_valid_request_id(request_id):
            raise RequestNotFound(f"no request with id {request_id!r}")
        async with (
            self._guard("get_request"),
            self._client.pipeline(transaction=True) as pipe,
        ):
            pipe.hgetall(self._keys.request(request_id))
            pipe.hgetall(self._keys.branches(request_id))
            stored, branches = await pipe.execute()
        if not stored:
            raise RequestNotFound(f"no request with id {request_id!r}")
        return _decode_record(stored, branches)

    async def update_request(self, request_id: str, **fields: Any) -> None:
        update = json_update(RequestRecord, fields, immutable=IMMUTABLE_REQUEST_FIELDS)
        await self._write_fields(request_id, _RECORD_KEY, update.items(), op="update_request")

    async def update_branch(self, request_id: str, index: int, **fields: Any) -> None:
        if index < 0:
            raise ValueError(f"branch index must be >= 0, got {index}")
        update = json_update(BranchRecord, fields, immutable=IMMUTABLE_BRANCH_FIELDS)
        pairs: list[tuple[str, Any]] = [(branch_field(index, "index"), index)]
        pairs += [(branch_field(index, name), value) for name, value in update.items()]
        await self._write_fields(request_id, _BRANCHES_KEY, pairs, op="update_branch")

    async def _write_fields(
        self, request_id: str, target: int, pairs: Iterable[tuple[str, Any]], *, op: str
    ) -> None:
        args = _pairs(pairs)
        if not args:
            return
        if not is_valid_request_id(request_id):
            raise RequestNotFound(f"no request with id {request_id!r}")
        async with self._guard(op):
            written = await self._write(
                keys=self._request_keys(request_id), args=[self._ttls.record_s, target, *args]
            )
        if not written:
            raise RequestNotFound(f"no request with id {request_id!r}")

    async def publish_cancel(self, request_id: str, reason: str) -> None:
        if not is_valid_request_id(request_id):
            raise RequestNotFound(f"no request with id {request_id!r}")
        k = self._keys
        async with self._guard("publish_cancel"):
            receivers = await self._cancel(
                keys=[k.request(request_id), k.cancel_flag(request_id)],
                args=[self._ttls.record_s, reason, k.cancel_channel(request_id)],
            )
        if receivers == -1:
            raise RequestNotFound(f"no request with id {request_id!r}")

    async def is_cancelled(self, request_id: str) -> bool:
        if not is_valid_request_id(request_id):
            return False
        async with self._guard("is_cancelled"):
            return bool(await self._client.exists(self._keys.cancel_flag(request_id)))

    async def cancel_reasons(self, request_ids: list[str]) -> list[str | None]:
        """The cancel reason of each request (``None`` where it was not cancelled)."""
        if not request_ids:
            return []
        async with self._guard("cancel_reasons"):
            reasons = await self._client.mget([self._keys.cancel_flag(r) for r in request_ids])
        return [None if r is None else str(r) for r in reasons]

    @asynccontextmanager
    async def cancel_listener(self) -> AsyncIterator[CancelListener]:
        listener = _RedisCancelListener(
            self, timeout_s=self._timeout_s, subscribe_deadline_s=self._op_deadline_s
        )
        task = asyncio.create_task(listener.run(), name="tts-cancel-listener")
        try:
            try:
                async with asyncio.timeout(self._op_deadline_s):
                    await listener.wait_ready()
            except TimeoutError:
                raise StateUnavailable(
                    "state store unavailable: cannot subscribe to cancel events"
                ) from None
            yield listener
        finally:
            # Python 3.11's asyncio.wait_for (used by redis-py to send commands) can swallow a
            # cancellation, so flag the listener closed and cancel until the task has ended.
            listener.close()
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.2)
            with suppress(asyncio.CancelledError):
                await task

    async def ping(self) -> None:
        async with self._guard("ping"):
            await self._client.ping()

    async def aclose(self) -> None:
        with suppress(RedisError, OSError):
            await self._client.aclose()


class _RedisCancelListener(CancelListener):
    """Pattern-subscribes to every cancel channel; re-subscribes after any failure."""

    backoff_initial_s = 0.05
    backoff_max_s = 2.0

    def __init__(self, store: RedisStateStore, *, timeout_s: float, subscribe_deadline_s: float):
        super().__init__()
        self._store = store
        self._timeout_s = timeout_s
        self._subscribe_deadline_s = subscribe_deadline_s
        # Ping a quiet subscription so that a silently dead server is noticed.
        self._ping_interval_s = max(timeout_s, 0.5)
        self._closed = False

    def close(self) -> None:
        self._closed = True

    async def run(self) -> None:
        backoff = self.backoff_initial_s
        pattern = self._store.keys.cancel_pattern
        while not self._closed:
            pubsub = self._store.client.pubsub()
            try:
                async with asyncio.timeout(self._subscribe_deadline_s):
                    await pubsub.psubscribe(pattern)
                    await _until_subscribed(pubsub)
                await self._resync()
                self._set_ready(True)
                backoff = self.backoff_initial_s
                await self._pump(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError, StateUnavailable) as exc:
                log.warning("cancel listener lost Redis (%s); re-subscribing", exc)
            except Exception:
                log.exception("cancel listener failed; re-subscribing")
            finally:
                self._set_ready(False)
                with suppress(Exception):
                    await pubsub.aclose()
            if self._closed:
                return
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, self.backoff_max_s)

    async def _resync(self) -> None:
        watched = sorted(self.watched)
        reasons = await self._store.cancel_reasons(watched)
        self._deliver_resynced(zip(watched, reasons, strict=True))

    async def _pump(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_heard = loop.time()
        ping_sent_at: float | None = None
        while not self._closed:
            # Subscribe-type messages must come through: the answer to our PING is one of them.
            message = await pubsub.get_message(
                ignore_subscribe_messages=False, timeout=self._ping_interval_s / 2
            )
            now = loop.time()
            if message is not None:
                last_heard, ping_sent_at = now, None
                self._on_message(message)
                continue
            if ping_sent_at is not None:
                if now - ping_sent_at > self._timeout_s:
                    raise TimeoutError("no pong from Redis")
            elif now - last_heard >= self._ping_interval_s:
                await pubsub.ping()
                ping_sent_at = now

    def _on_message(self, message: Mapping[str, Any]) -> None:
        if message.get("type") != "pmessage":
            return
        request_id = self._store.keys.request_id_from_cancel_channel(str(message["channel"]))
        if request_id is not None:
            self._deliver(CancelEvent(request_id=request_id, reason=str(message["data"])))


async def _until_subscribed(pubsub: PubSub) -> None:
    while True:
        message = await pubsub.get_message(timeout=None)
        if message is not None and message.get("type") == "psubscribe":
            return


def _pairs(items: Iterable[tuple[str, Any]]) -> list[str]:
    """Flatten (field, value) pairs into HSET arguments, values as JSON."""
    out: list[str] = []
    for name, value in items:
        out += [name, json.dumps(value)]
    return out


def _decode_record(stored: Mapping[str, str], branch_fields: Mapping[str, str]) -> RequestRecord:
    data: dict[str, Any] = {
        name: json.loads(raw) for name, raw in stored.items() if name in RequestRecord.model_fields
    }
    branches: dict[int, dict[str, Any]] = {}
    for name, raw in branch_fields.items():
        parsed = parse_branch_field(name)
        if parsed is None or parsed[1] not in BranchRecord.model_fields:
            continue  # written by a newer version: ignore rather than fail the read
        index, field = parsed
        branches.setdefault(index, {"index": index})[field] = json.loads(raw)
    data["branches"] = [branches[i] for i in sorted(branches)]
    return RequestRecord.model_validate(data)


@asynccontextmanager
async def open_state_store(
    config: RedisConfig, *, keys: KeySchema | None = None
) -> AsyncIterator[RedisStateStore]:
    """The configured store; with no URL, a private ``redis-server`` on the data directory
    lives as long as it."""
    async with AsyncExitStack() as stack:
        url = config.url
        if url is None:
            embedded = EmbeddedRedis(data_dir=resolve_data_dir(config.data_dir))
            url = (await stack.enter_async_context(embedded)).url
        store = RedisStateStore(url, config=config, keys=keys)
        stack.push_async_callback(store.aclose)
        await store.ping()
        yield store
