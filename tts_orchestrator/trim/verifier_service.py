"""The asynchronous verifier: wire format, the API-side client, and the worker loop.

Branches publish checks (does this thought reach an answer? are these two answers the same?)
to one Redis Stream; verifier workers (Ray actors, one consumer group) read them in
micro-batches across requests, judge them, and append verdicts to the asking replica's reply
stream. Nothing waits: a branch keeps decoding and acts when a verdict arrives. Unacknowledged
checks of a crashed worker are claimed by the next one, so the queue survives restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import RedisError, ResponseError

from tts_orchestrator.state.schema import KeySchema, KeyTtls
from verifiers.judges import JudgeContext, ThoughtJudge, Verdict
from verifiers.segmentation import Thought

log = logging.getLogger(__name__)

_REPLY_MAXLEN = 50_000


class VerifierJob(BaseModel):
    """One check. `key` routes the verdict back to a branch (request id / branch index)."""

    key: str
    reply_to: str
    kind: Literal["reaches", "consistent"]
    problem: str = ""
    family: str = "generic"  # selects the judge's per-family (preset) settings
    thought: Thought | None = None
    first: str = ""
    second: str = ""
    tag: str = ""  # caller's correlation (thought index, or the consistency pair)
    submitted_at: float = 0.0


class VerifierReply(BaseModel):
    key: str
    kind: Literal["reaches", "consistent"]
    tag: str
    verdict: Verdict
    latency_s: float


ReplyHandler = Callable[[VerifierReply], None]


class Verifier(Protocol):
    """What a live trimmer needs: submit checks and get each verdict back by key."""

    def register(self, key: str, handler: ReplyHandler) -> None: ...

    def unregister(self, key: str) -> None: ...

    async def submit(self, job: VerifierJob) -> None: ...


class LocalVerifier:
    """Judges checks in this process (no Redis): each check is its own task, so a slow judge
    delays verdicts but never the branch that asked."""

    def __init__(self, judge: ThoughtJudge, *, delay_s: float = 0.0) -> None:
        self._judge = judge
        self._delay_s = delay_s
        self._handlers: dict[str, ReplyHandler] = {}
        self.submitted = 0

    def register(self, key: str, handler: ReplyHandler) -> None:
        self._handlers[key] = handler

    def unregister(self, key: str) -> None:
        self._handlers.pop(key, None)

    async def submit(self, job: VerifierJob) -> None:
        self.submitted += 1
        began = time.monotonic()
        if self._delay_s:
            await asyncio.sleep(self._delay_s)
        if job.kind == "reaches" and job.thought is not None:
            [verdict] = await self._judge.reaches_answer_many(
                [(job.thought, JudgeContext(problem=job.problem, family=job.family))]
            )
        else:
            [verdict] = await self._judge.consistent_many([(job.first, job.second)])
        handler = self._handlers.get(job.key)
        if handler is not None:
            latency = time.monotonic() - began
            handler(
                VerifierReply(
                    key=job.key, kind=job.kind, tag=job.tag, verdict=verdict, latency_s=latency
                )
            )


class VerifierClient:
    """API-replica side: submit checks, route verdicts to the branches that asked."""

    def __init__(self, client: aioredis.Redis, *, replica_id: str, keys: KeySchema) -> None:
        self._redis = client
        self._keys = keys
        self._reply_stream = keys.verifier_replies(replica_id)
        self._handlers: dict[str, ReplyHandler] = {}
        self._listener: asyncio.Task[None] | None = None
        self.submitted = 0
        self.received = 0

    def register(self, key: str, handler: ReplyHandler) -> None:
        self._handlers[key] = handler

    def unregister(self, key: str) -> None:
        self._handlers.pop(key, None)

    async def submit(self, job: VerifierJob) -> None:
        """Queue a check; a Redis failure only means no trim for it (never an error)."""
        job = job.model_copy(update={"reply_to": self._reply_stream, "submitted_at": time.time()})
        try:
            await self._redis.xadd(
                self._keys.verifier_stream,
                {"job": job.model_dump_json()},
                maxlen=KeyTtls().verifier_stream_maxlen,
                approximate=True,
            )
            self.submitted += 1
        except RedisError as exc:
            log.warning("verifier queue unavailable: %s", exc)

    def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        last = "$"
        while True:
            try:
                batches: Any = await self._redis.xread(
                    {self._reply_stream: last}, count=256, block=1000
                )
            except RedisError as exc:
                log.warning("verifier replies unavailable: %s", exc)
                await asyncio.sleep(0.5)
                continue
            for _stream, entries in batches or []:
                for entry_id, fields in entries:
                    last = entry_id
                    self._dispatch(fields)

    def _dispatch(self, fields: dict[bytes | str, bytes | str]) -> None:
        raw = fields.get(b"reply") or fields.get("reply")
        if raw is None:
            return
        reply = VerifierReply.model_validate_json(raw)
        self.received += 1
        handler = self._handlers.get(reply.key)
        if handler is not None:
            handler(reply)

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        with contextlib.suppress(Exception):
            await self._redis.delete(self._reply_stream)


class VerifierWorker:
    """One consumer of the verifier group (a Ray actor body; plain class)."""

    def __init__(
        self,
        redis_url: str,
        *,
        consumer: str,
        judge_factory: Callable[[], ThoughtJudge],
        batch: int = 64,
        claim_idle_ms: int = 5000,
        prefix: str = "tts",
    ) -> None:
        self._url = redis_url
        self._consumer = consumer
        self._judge_factory = judge_factory
        self._batch = batch
        self._claim_idle_ms = claim_idle_ms
        self._keys = KeySchema(prefix=prefix)
        self._task: asyncio.Task[None] | None = None
        self.processed = 0
        self.batches = 0

    async def start(self) -> None:
        """Start consuming; idempotent (the lifespan calls it again after Ray restarts us)."""
        if self._task is not None and not self._task.done():
            return
        self._redis = aioredis.Redis.from_url(self._url)
        self._judge = self._judge_factory()
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self._redis.xgroup_create(
                self._keys.verifier_stream, self._keys.verifier_group, id="0", mkstream=True
            )
        self._task = asyncio.create_task(self._run())

    async def stats(self) -> dict[str, int | bool]:
        running = self._task is not None and not self._task.done()
        return {
            "pid": os.getpid(),
            "running": running,
            "processed": self.processed,
            "batches": self.batches,
        }

    async def _run(self) -> None:
        stream, group = self._keys.verifier_stream, self._keys.verifier_group
        while True:
            try:
                # Checks a dead consumer left unacknowledged come first.
                claim: Any = await self._redis.xautoclaim(
                    stream, group, self._consumer, self._claim_idle_ms, "0-0", count=self._batch
                )
                entries = list(claim[1])
                if not entries:
                    got: Any = await self._redis.xreadgroup(
                        group, self._consumer, {stream: ">"}, count=self._batch, block=500
                    )
                    entries = [e for _s, es in got or [] for e in es]
                if entries:
                    await self._handle(entries)
            except RedisError as exc:
                log.warning("verifier worker %s: %s", self._consumer, exc)
                await asyncio.sleep(0.5)

    async def _handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        jobs = []
        for entry_id, fields in entries:
            raw = fields.get(b"job")
            if raw is not None:
                jobs.append((entry_id, VerifierJob.model_validate_json(raw)))
        reaches = [(i, j) for i, j in jobs if j.kind == "reaches" and j.thought is not None]
        pairs = [(i, j) for i, j in jobs if j.kind == "consistent"]
        verdicts: list[tuple[bytes, VerifierJob, Verdict]] = []
        if reaches:
            results = await self._judge.reaches_answer_many(
                [(j.thought, JudgeContext(problem=j.problem, family=j.family)) for _i, j in reaches]  # type: ignore[misc]
            )
            verdicts += [(i, j, v) for (i, j), v in zip(reaches, results, strict=True)]
        if pairs:
            results = await self._judge.consistent_many([(j.first, j.second) for _i, j in pairs])
            verdicts += [(i, j, v) for (i, j), v in zip(pairs, results, strict=True)]
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        for _entry, job, verdict in verdicts:
            reply = VerifierReply(
                key=job.key,
                kind=job.kind,
                tag=job.tag,
                verdict=verdict,
                latency_s=max(0.0, now - job.submitted_at),
            )
            pipe.xadd(
                job.reply_to,
                {"reply": reply.model_dump_json()},
                maxlen=_REPLY_MAXLEN,
                approximate=True,
            )
        ids = [entry_id for entry_id, _ in entries]
        pipe.xack(self._keys.verifier_stream, self._keys.verifier_group, *ids)
        await pipe.execute()
        self.processed += len(verdicts)
        self.batches += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._redis.aclose()
