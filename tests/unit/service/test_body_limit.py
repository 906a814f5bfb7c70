"""The body-size middleware: a refused body is drained (within bounds) before the 413."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from tts_orchestrator.api.body_limit import BodySizeLimit

CHUNK = b"x" * 1000


async def _app(scope: Any, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


async def _call(
    limit: BodySizeLimit, chunks: int, *, declared: bool, stall_after: int | None = None
) -> tuple[int, dict[bytes, bytes], int]:
    """(status, headers, body chunks the middleware read) for a body of `chunks` chunks."""
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        if stall_after is not None and read >= stall_after:
            await asyncio.sleep(3600)
        read += 1
        return {"type": "http.request", "body": CHUNK, "more_body": read < chunks}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-length", str(chunks * len(CHUNK)).encode())] if declared else []
    scope = {"type": "http", "method": "POST", "headers": headers}
    await limit(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), read


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("chunks", "status", "read_all", "keep_alive"),
    [
        pytest.param(5, 200, True, True, id="within-the-limit"),
        pytest.param(50, 413, True, True, id="over-the-limit-drained"),
        pytest.param(500, 413, False, False, id="over-the-drain-bound-closed"),
    ],
)
async def test_a_refused_body_is_read_within_the_drain_bound(
    declared: bool, chunks: int, status: int, read_all: bool, keep_alive: bool
) -> None:
    limit = BodySizeLimit(_app, max_bytes=10_000, drain_max_bytes=100_000)
    got, headers, read = await _call(limit, chunks, declared=declared)
    assert got == status
    assert (read == chunks) is read_all
    assert (headers.get(b"connection") != b"close") is keep_alive
    assert read <= 102  # never more than the bound (plus the chunk that crossed it)


async def test_a_stalled_upload_is_drained_for_the_timeout_only() -> None:
    limit = BodySizeLimit(_app, max_bytes=10_000, drain_timeout_s=0.2)
    async with asyncio.timeout(5):
        got, headers, read = await _call(limit, 100, declared=False, stall_after=20)
    assert (got, headers[b"connection"], read) == (413, b"close", 20)
