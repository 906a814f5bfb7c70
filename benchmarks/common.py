"""Shared pieces of the benchmarks: timing one streamed request, and docs/benchmarks.md."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from evals.docs import machine, write_section


@dataclass
class StreamTiming:
    ttft_s: float
    total_s: float
    completion_tokens: int
    response_id: str = ""
    worker_prompt_ms: float | None = None  # the engine's own prefill time, when it reports it
    #: The service's own record of the request (seconds from its start), when read back.
    server_timings: dict[str, float] = field(default_factory=dict)

    @property
    def decode_tps(self) -> float:
        """Tokens per second after the first token (the decode rate the client sees)."""
        span = self.total_s - self.ttft_s
        return (
            (self.completion_tokens - 1) / span if span > 0 and self.completion_tokens > 1 else 0.0
        )


async def timed_stream(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> StreamTiming:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft: float | None = None
    tokens = 0
    response_id = ""
    prompt_ms: float | None = None
    async with client.stream("POST", url, json=body, timeout=300) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            event = json.loads(line[5:])
            if "error" in event:
                raise RuntimeError(event["error"])
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                text = choice.get("text") or delta.get("content") or delta.get("reasoning_content")
                if text and ttft is None:
                    ttft = time.perf_counter() - start
            if event.get("usage"):
                tokens = int(event["usage"]["completion_tokens"])
            response_id = event.get("id") or response_id
            if event.get("timings"):
                prompt_ms = float(event["timings"]["prompt_ms"])
    total = time.perf_counter() - start
    return StreamTiming(
        ttft_s=ttft if ttft is not None else total,
        total_s=total,
        completion_tokens=tokens,
        response_id=response_id,
        worker_prompt_ms=prompt_ms,
    )


def p50(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


__all__ = ["StreamTiming", "machine", "p50", "timed_stream", "write_section"]
