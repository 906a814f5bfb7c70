"""Streaming parse of an OpenAI-style worker (llama.cpp adapter): chunks go out as they arrive."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.backends.llamacpp import LlamaCppBackend


class CountingStream(httpx.AsyncByteStream):
    """An SSE body that counts how many events the reader has pulled."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            self.pulled += 1
            yield f"data: {json.dumps(event)}\n\n".encode()
        yield b"data: [DONE]\n\n"


def token(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}


USAGE = {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}


def backend_for(stream: CountingStream) -> LlamaCppBackend:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=stream))
    client = httpx.AsyncClient(transport=transport)
    return LlamaCppBackend(url="http://worker", model="m", client=client)


async def test_a_token_is_yielded_before_the_next_event_is_read() -> None:
    stream = CountingStream([token("a"), token("b"), token("c", "stop"), USAGE])
    chunks = backend_for(stream).stream_completion("p", SamplingParams(), request_id="r/0")
    first = await anext(chunks)
    assert first.text == "a"
    assert stream.pulled == 1
    second = await anext(chunks)
    assert second.text == "b"
    assert stream.pulled == 2
    rest = [c async for c in chunks]
    assert [c.text for c in rest] == ["c"]
    assert rest[0].finish_reason == "stop"
    assert rest[0].usage is not None
    assert rest[0].usage.completion_tokens == 3


async def test_a_finishing_chunk_without_trailer_keeps_its_own_usage() -> None:
    last = token("b", "length") | {"usage": {"prompt_tokens": 2, "completion_tokens": 2}}
    stream = CountingStream([token("a"), last])
    chunks = [
        c
        async for c in backend_for(stream).stream_completion(
            "p", SamplingParams(), request_id="r/1"
        )
    ]
    assert [(c.text, c.finish_reason) for c in chunks] == [("a", None), ("b", "length")]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 2


def _entry(token: str, logprob: float, tops: list[float]) -> dict[str, Any]:
    top = [{"id": i, "token": f"t{i}", "logprob": lp, "bytes": []} for i, lp in enumerate(tops)]
    return {"id": 7, "token": token, "logprob": logprob, "bytes": [], "top_logprobs": top}


async def test_top_logprobs_become_deepconf_token_confidence() -> None:
    # llama.cpp's /v1/completions logprobs: OpenAI chat-style entries with their top_logprobs.
    lp = {"content": [_entry("a", -0.1, [-0.1, -1.0, -2.0, -2.9])]}
    sampled_only = {"content": [{"id": 8, "token": "b", "logprob": -0.7, "bytes": []}]}
    events = [
        {"choices": [{"index": 0, "text": "a", "finish_reason": None, "logprobs": lp}]},
        {"choices": [{"index": 0, "text": "b", "finish_reason": "stop", "logprobs": sampled_only}]},
    ]
    stream = CountingStream(events)
    params = SamplingParams(logprobs=4)
    chunks = [c async for c in backend_for(stream).stream_completion("p", params, request_id="r")]
    assert chunks[0].token_logprobs == [-0.1]
    assert chunks[0].token_confidence is not None
    assert chunks[0].token_confidence[0] == 1.5  # -(−0.1 − 1.0 − 2.0 − 2.9) / 4
    assert chunks[1].token_logprobs == [-0.7]
    assert chunks[1].token_confidence is None


def test_the_llamacpp_body_asks_for_top_logprobs() -> None:
    backend = backend_for(CountingStream([]))
    assert backend.completion_body("p", SamplingParams(logprobs=20))["logprobs"] == 20
