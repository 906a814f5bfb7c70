"""Minimal OpenAI-compatible chat client that measures latency and time to first token.

Streams ``/v1/chat/completions`` over :class:`httpx.AsyncClient` (a base URL, or an ASGI app
in-process via :class:`httpx.ASGITransport`). Note that ``ASGITransport`` buffers the whole
response before returning it, so in-process TTFT equals the full latency; TTFT is only meaningful
against a live server.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from pydantic import BaseModel, Field

from verifiers.confidence import ConfidenceSource, token_confidence

__all__ = ["ChatClient", "ChatRequestError", "ChatResult"]


class ChatRequestError(RuntimeError):
    """The server answered with an error status or an error payload, or the stream broke."""


class ChatResult(BaseModel):
    """One chat completion, whether streamed or not."""

    content: str = ""
    reasoning_content: str | None = None
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None
    tts: dict[str, Any] | None = Field(default=None, description="The response's `tts` block.")
    latency_s: float
    ttft_s: float | None = Field(default=None, description="Time to the first generated text.")
    token_confidence: list[float] | None = Field(
        default=None,
        description="Per generated token, DeepConf's confidence from the returned top logprobs "
        "(or the sampled logprob where none came; see `confidence_source`).",
    )
    confidence_source: str | None = Field(default=None, description="top_k | sampled.")


class _StreamAccumulator:
    def __init__(self, started: float) -> None:
        self.started = started
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.tts: dict[str, Any] | None = None
        self.ttft_s: float | None = None
        self.confidence: list[float] = []
        self.sources: set[ConfidenceSource] = set()

    def _logprobs(self, logprobs: dict[str, Any] | None) -> None:
        for entry in (logprobs or {}).get("content") or ():
            tops = [float(t["logprob"]) for t in entry.get("top_logprobs") or ()]
            if len(tops) >= 2:
                self.confidence.append(token_confidence(tops))
                self.sources.add(ConfidenceSource.TOP_K)
            else:
                self.confidence.append(float(entry["logprob"]))
                self.sources.add(ConfidenceSource.SAMPLED)

    def add(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk:
            raise ChatRequestError(f"error in stream: {chunk['error']}")
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        if chunk.get("tts") is not None:
            self.tts = chunk["tts"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            self._logprobs(choice.get("logprobs"))
            delta = choice.get("delta") or {}
            text = delta.get("content")
            thought = delta.get("reasoning_content")
            if (text or thought) and self.ttft_s is None:
                self.ttft_s = time.perf_counter() - self.started
            if text:
                self.content.append(text)
            if thought:
                self.reasoning.append(thought)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def result(self) -> ChatResult:
        return ChatResult(
            content="".join(self.content),
            reasoning_content="".join(self.reasoning) if self.reasoning else None,
            finish_reason=self.finish_reason,
            model=self.model,
            usage=self.usage,
            tts=self.tts,
            latency_s=time.perf_counter() - self.started,
            ttft_s=self.ttft_s,
            token_confidence=self.confidence or None,
            confidence_source=_source(self.sources),
        )


def _source(sources: set[ConfidenceSource]) -> str | None:
    if len(sources) > 1:
        raise ChatRequestError("the server mixed top-k and sampled-only logprobs in one answer")
    return next(iter(sources)).value if sources else None


def _error_text(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500]
    error = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)[:500]


class ChatClient:
    """Sends chat completion bodies to one endpoint; the caller owns the httpx client."""

    def __init__(self, client: httpx.AsyncClient, *, path: str = "/v1/chat/completions") -> None:
        self._client = client
        self._path = path

    async def complete(self, body: dict[str, Any], *, stream: bool = True) -> ChatResult:
        if stream:
            return await self._stream(body)
        return await self._once(body)

    async def _stream(self, body: dict[str, Any]) -> ChatResult:
        payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        acc = _StreamAccumulator(started)
        try:
            async with self._client.stream("POST", self._path, json=payload) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise ChatRequestError(f"HTTP {response.status_code}: {_error_text(response)}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:") :].strip()
                    if data == "[DONE]":
                        break
                    acc.add(json.loads(data))
        except httpx.HTTPError as exc:
            raise ChatRequestError(f"{type(exc).__name__}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ChatRequestError(f"malformed stream chunk: {exc}") from exc
        return acc.result()

    async def _once(self, body: dict[str, Any]) -> ChatResult:
        started = time.perf_counter()
        try:
            response = await self._client.post(self._path, json={**body, "stream": False})
        except httpx.HTTPError as exc:
            raise ChatRequestError(f"{type(exc).__name__}: {exc}") from exc
        latency = time.perf_counter() - started
        if response.status_code >= 400:
            raise ChatRequestError(f"HTTP {response.status_code}: {_error_text(response)}")
        payload = response.json()
        choice = (payload.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        return ChatResult(
            content=message.get("content") or "",
            reasoning_content=message.get("reasoning_content"),
            finish_reason=choice.get("finish_reason"),
            model=payload.get("model"),
            usage=payload.get("usage"),
            tts=payload.get("tts"),
            latency_s=latency,
            ttft_s=None,
        )
