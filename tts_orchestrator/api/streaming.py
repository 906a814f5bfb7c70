"""Turn orchestrator events into OpenAI responses: one object, or SSE chunks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from tts_orchestrator.api.errors import sse_error
from tts_orchestrator.exceptions import TTSError
from tts_orchestrator.protocol import (
    ChatChoice,
    ChatCompletionResponse,
    ChatResponseMessage,
    CompletionChoice,
    CompletionResponse,
    UsageInfo,
)
from tts_orchestrator.request.events import OutputEvent
from tts_orchestrator.request.orchestrator import Orchestrator
from tts_orchestrator.request.prepared import PreparedRequest
from tts_orchestrator.state.records import Endpoint, RecordUsage


def usage_info(u: RecordUsage | None) -> UsageInfo:
    if u is None:
        return UsageInfo()
    return UsageInfo(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        prompt_tokens_details={"cached_tokens": u.cached_prompt_tokens},
        # Summed over every branch, counted by the same thinking/answer split as the text.
        completion_tokens_details={"reasoning_tokens": u.reasoning_tokens},
    )


async def collect(
    orchestrator: Orchestrator, p: PreparedRequest
) -> ChatCompletionResponse | CompletionResponse:
    reasoning: list[str] = []
    content: list[str] = []
    last = OutputEvent()
    async for event in orchestrator.run(p):
        reasoning.append(event.reasoning)
        content.append(event.content)
        last = event
    text = "".join(content)
    if p.endpoint is Endpoint.CHAT:
        message = ChatResponseMessage(content=text, reasoning_content="".join(reasoning) or None)
        return ChatCompletionResponse(
            id=p.id,
            model=p.model,
            choices=[ChatChoice(message=message, finish_reason=last.finish_reason)],
            usage=usage_info(last.usage),
            tts=last.tts,
        )
    return CompletionResponse(
        id=p.id,
        model=p.model,
        choices=[
            CompletionChoice(
                text=text if _voted(p) else "".join(reasoning) + text,
                finish_reason=last.finish_reason,
            )
        ],
        usage=usage_info(last.usage),
        tts=last.tts,
    )


def _voted(p: PreparedRequest) -> bool:
    """A voted completion's text is the winner's: the live text of the branches it followed
    is not part of any one completion (chat shows it as ``reasoning_content``)."""
    return p.n_branches > 1


class _ChunkWriter:
    def __init__(self, p: PreparedRequest) -> None:
        self.p = p
        self.created = int(time.time())
        self.chat = p.endpoint is Endpoint.CHAT
        self.obj = "chat.completion.chunk" if self.chat else "text_completion"

    def _frame(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        body = {"id": self.p.id, "object": self.obj, "created": self.created, "model": self.p.model}
        body["choices"] = choices
        body.update(extra)
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    def delta(self, event: OutputEvent, *, first: bool = False) -> str | None:
        if self.chat:
            d: dict[str, Any] = {"role": "assistant"} if first else {}
            if event.reasoning:
                d["reasoning_content"] = event.reasoning
            if event.content:
                d["content"] = event.content
            return self._frame([{"index": 0, "delta": d, "finish_reason": None}])
        text = event.content if _voted(self.p) else event.reasoning + event.content
        if not text:
            return None
        return self._frame([{"index": 0, "text": text, "finish_reason": None}])

    def progress(self, event: OutputEvent) -> str:
        """A chunk with an empty delta and the `tts` progress object (clients that do not
        know it ignore the extra field)."""
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": None}
        else:
            choice = {"index": 0, "text": "", "finish_reason": None}
        return self._frame([choice], tts=event.tts)

    def finish(self, event: OutputEvent) -> str:
        extra = {"tts": event.tts} if event.tts else {}
        if self.chat:
            choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": event.finish_reason}
        else:
            choice = {"index": 0, "text": "", "finish_reason": event.finish_reason}
        return self._frame([choice], **extra)

    def usage(self, event: OutputEvent) -> str:
        return self._frame([], usage=usage_info(event.usage).model_dump(exclude_none=True))


async def sse_stream(
    orchestrator: Orchestrator, p: PreparedRequest, *, include_usage: bool
) -> AsyncGenerator[str, None]:
    writer = _ChunkWriter(p)
    first = True
    try:
        async for event in orchestrator.run(p):
            frame = writer.delta(event, first=first) if event.reasoning or event.content else None
            if frame is not None:
                yield frame
                first = False
            if event.tts and event.finish_reason is None:
                yield writer.progress(event)
            if event.finish_reason is not None:
                yield writer.finish(event)
                if include_usage:
                    yield writer.usage(event)
    except TTSError as exc:
        orchestrator.metrics.errors.labels(exc.error_type).inc()
        yield sse_error(exc)
    yield "data: [DONE]\n\n"


class EventStreamResponse(StreamingResponse):
    """SSE response that notices a client disconnect at once, even between writes, and always
    closes its generator, so every branch and engine request is released promptly.

    Starlette relies on a failed write to notice a disconnect and leaves closing the generator
    to garbage collection; both are too late for freeing engine slots.
    """

    def __init__(self, content: AsyncGenerator[str, None], **kwargs: Any) -> None:
        super().__init__(content, media_type="text/event-stream", **kwargs)
        self._generator = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        stream = asyncio.ensure_future(self.stream_response(send))
        watch = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({stream, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stream, watch):
                task.cancel()
            await asyncio.gather(stream, watch, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._generator.aclose()
        exc = None if stream.cancelled() else stream.exception()
        if exc is not None and not isinstance(exc, OSError):
            raise exc
