"""ASGI middleware refusing request bodies over the configured size with a 413.

The body is read (up to the limit) before the app runs: a parser that caught our signal half
way would turn it into a 400, and a declared Content-Length may be absent (chunked uploads).

A refused body is then **read and discarded** before the 413 is sent, up to
``DRAIN_MAX_BYTES`` (64 MiB) in all and for at most ``DRAIN_TIMEOUT_S`` (10 s): a client that
writes its whole body before reading (Python's ``urllib``, ``requests``) would otherwise have
the server close a socket with unread data in it, and the kernel answers that with a reset
(ECONNRESET / EPIPE), not the 413. Past either bound the 413 is sent with ``Connection: close``
and such a client may still see a reset; the bound keeps a refused upload from costing more
than reading 64 MiB once.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tts_orchestrator.api.errors import error_body

DRAIN_MAX_BYTES = 64 << 20
DRAIN_TIMEOUT_S = 10.0


class BodySizeLimit:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        drain_max_bytes: int = DRAIN_MAX_BYTES,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_max_bytes = drain_max_bytes
        self.drain_timeout_s = drain_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                drained = int(value) <= self.drain_max_bytes and await self._drain(receive, 0)
                await self._reject(send, keep_alive=drained)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([], message, receive), send)
                return
            body = message.get("body", b"")
            size += len(body)
            more = message.get("more_body", False)
            if size > self.max_bytes:
                drained = not more or await self._drain(receive, size)
                await self._reject(send, keep_alive=drained)
                return
            chunks.append(body)
            if not more:
                break
        await self.app(scope, _replay(chunks, None, receive), send)

    async def _drain(self, receive: Receive, already: int) -> bool:
        """Read and drop the rest of the body within the bounds; True if all of it was read."""
        drained = already
        try:
            async with asyncio.timeout(self.drain_timeout_s):
                while drained <= self.drain_max_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return False
                    drained += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return True
        except TimeoutError:
            pass
        return False

    async def _reject(self, send: Send, *, keep_alive: bool) -> None:
        body = json.dumps(
            error_body(
                f"request body exceeds {self.max_bytes} bytes",
                "invalid_request_error",
                code="too_large",
            )
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if not keep_alive:  # unread body bytes remain: the connection cannot be reused
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(chunks: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    """A receive() that first hands out the buffered body, then defers to the real one
    (which later reports the client's disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if pending is not None:
                return pending
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        return await receive()

    return replayed
