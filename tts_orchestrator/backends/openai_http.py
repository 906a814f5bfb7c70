"""Shared adapter for workers that speak OpenAI `/v1/completions` with SSE (llama.cpp, vLLM).

Engine-specific subclasses add the parts the OpenAI API does not define: health, metrics,
tokenisation and the chat template. All instances share one `httpx.AsyncClient`.
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tts_orchestrator.backends.base import (
    CompletionChunk,
    SamplingParams,
    Usage,
    WorkerBackend,
    WorkerMetrics,
)
from tts_orchestrator.backends.chat_template import ChatTemplate, ChatTemplateInfo
from tts_orchestrator.exceptions import WorkerError
from verifiers.confidence import token_confidence

_TRANSPORT_ERRORS = (httpx.TransportError, httpx.StreamError)


def parse_prometheus(text: str) -> dict[str, float]:
    """Flatten Prometheus exposition text to {sample name: value} (labels dropped, summed)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
    return out


def _token_logprobs(choice: dict[str, Any]) -> tuple[list[float] | None, list[float] | None]:
    """(sampled token's logprob, DeepConf token confidence) per token of one SSE event; the
    confidence is None unless the engine sent at least two top logprobs for every token."""
    lp = choice.get("logprobs")
    if not lp:
        return None, None
    tops: list[list[float]]
    if isinstance(lp.get("content"), list):  # llama.cpp: OpenAI chat-style entries
        entries = lp["content"]
        sampled = [float(e["logprob"]) for e in entries]
        tops = [[float(t["logprob"]) for t in e.get("top_logprobs") or ()] for e in entries]
    elif isinstance(lp.get("token_logprobs"), list):  # vLLM / OpenAI legacy completions
        sampled = [float(x) for x in lp["token_logprobs"] if x is not None]
        tops = [[float(v) for v in (t or {}).values()] for t in lp.get("top_logprobs") or ()]
    else:
        return None, None
    if len(tops) != len(sampled) or any(len(t) < 2 for t in tops):
        return sampled, None
    return sampled, [token_confidence(t) for t in tops]


class OpenAIHTTPBackend(WorkerBackend, abc.ABC):
    """Streams `/v1/completions` from one worker URL; closing the stream aborts the request."""

    def __init__(self, *, url: str, model: str, client: httpx.AsyncClient, name: str | None = None):
        self.url = url.rstrip("/")
        self.model = model
        self.name = name or self.url
        self._client = client
        self._inflight: dict[str, httpx.Response] = {}
        self._template: ChatTemplate | None = None

    # -- the request body -------------------------------------------------------------------
    def completion_body(self, prompt: str, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if params.logprobs is not None:
            body["logprobs"] = max(params.logprobs, 1)
        if params.ignore_eos:  # llama.cpp and vLLM both accept it on /v1/completions
            body["ignore_eos"] = True
        return body

    # -- streaming ----------------------------------------------------------------------------
    async def stream_completion(
        self, prompt: str, params: SamplingParams, *, request_id: str
    ) -> AsyncIterator[CompletionChunk]:
        body = self.completion_body(prompt, params)
        request = self._client.build_request(
            "POST",
            f"{self.url}/v1/completions",
            json=body,
            timeout=httpx.Timeout(None, connect=5.0),
        )
        try:
            response = await self._client.send(request, stream=True)
        except _TRANSPORT_ERRORS as exc:
            raise WorkerError(f"worker {self.name} unreachable: {exc!r}") from exc
        self._inflight[request_id] = response
        finished = False
        try:
            if response.status_code != 200:
                detail = (await response.aread()).decode(errors="replace")[:500]
                raise WorkerError(f"worker {self.name} answered {response.status_code}: {detail}")
            async for chunk in self._parse_sse(response):
                finished = finished or chunk.finish_reason is not None
                yield chunk
            if not finished:
                raise WorkerError(f"worker {self.name} closed the stream before finishing")
        except _TRANSPORT_ERRORS as exc:
            if request_id not in self._inflight:  # aborted on purpose
                return
            raise WorkerError(f"worker {self.name} failed mid-stream: {exc!r}") from exc
        finally:
            self._inflight.pop(request_id, None)
            await response.aclose()

    async def _parse_sse(self, response: httpx.Response) -> AsyncIterator[CompletionChunk]:
        pending: CompletionChunk | None = None
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                event = json.loads(data)
            except json.JSONDecodeError as exc:
                raise WorkerError(f"worker {self.name} sent malformed SSE: {data[:200]}") from exc
            if "error" in event:
                raise WorkerError(f"worker {self.name} error: {event['error']}")
            chunk = self._chunk_from_event(event)
            if chunk is None:
                continue
            # Usage may arrive in a trailing choice-less event after the finishing chunk: only
            # that chunk waits to take it in; every other one goes out at once (holding each
            # chunk for the next would add a whole decode step to the time to first token).
            if pending is not None:
                if not chunk.text and chunk.finish_reason is None and chunk.usage is not None:
                    pending = pending.model_copy(
                        update={"usage": chunk.usage, "timings": chunk.timings}
                    )
                    continue
                yield pending
                pending = None
            if chunk.finish_reason is None:
                yield chunk
            else:
                pending = chunk
        if pending is not None:
            yield pending

    def _chunk_from_event(self, event: dict[str, Any]) -> CompletionChunk | None:
        choices = event.get("choices") or []
        usage = self._usage(event)
        timings = event.get("timings")
        if not choices:
            if usage is None:
                return None
            return CompletionChunk(usage=usage, timings=timings)
        choice = choices[0]
        text = choice.get("text") or ""
        logprobs, confidence = _token_logprobs(choice)
        n_tokens = len(logprobs) if logprobs is not None else (1 if text else 0)
        return CompletionChunk(
            text=text,
            n_tokens=n_tokens,
            token_logprobs=logprobs,
            token_confidence=confidence,
            finish_reason=choice.get("finish_reason"),
            usage=usage,
            timings=timings,
        )

    @staticmethod
    def _usage(event: dict[str, Any]) -> Usage | None:
        raw = event.get("usage")
        if not raw:
            return None
        details = raw.get("prompt_tokens_details") or {}
        return Usage(
            prompt_tokens=int(raw.get("prompt_tokens") or 0),
            completion_tokens=int(raw.get("completion_tokens") or 0),
            cached_prompt_tokens=details.get("cached_tokens"),
        )

    async def abort(self, request_id: str) -> None:
        response = self._inflight.pop(request_id, None)
        if response is not None:
            with contextlib.suppress(Exception):
                await response.aclose()

    # -- the rest of the contract -------------------------------------------------------------
    async def _get_json(self, path: str, **kwargs: Any) -> Any:
        try:
            r = await self._client.get(f"{self.url}{path}", timeout=10.0, **kwargs)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise WorkerError(f"worker {self.name} {path}: {exc!r}") from exc

    async def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        try:
            r = await self._client.post(f"{self.url}{path}", json=body, timeout=10.0)
            r.raise_for_status()
            return r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise WorkerError(f"worker {self.name} {path}: {exc!r}") from exc

    async def health(self) -> bool:
        try:
            r = await self._client.get(f"{self.url}/health", timeout=2.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def metrics(self) -> WorkerMetrics:
        try:
            r = await self._client.get(f"{self.url}/metrics", timeout=5.0)
            r.raise_for_status()
        except httpx.HTTPError as exc:
            raise WorkerError(f"worker {self.name} /metrics: {exc!r}") from exc
        return self.normalise_metrics(parse_prometheus(r.text))

    @abc.abstractmethod
    def normalise_metrics(self, raw: dict[str, float]) -> WorkerMetrics:
        """Map engine-specific metric names onto `WorkerMetrics`."""

    @abc.abstractmethod
    async def chat_template_info(self) -> ChatTemplateInfo:
        """Fetch the worker's chat template (once; the result is cached by the caller)."""

    async def apply_chat_template(
        self,
        messages: Sequence[dict[str, str]],
        *,
        template_kwargs: dict[str, object] | None = None,
    ) -> str:
        if self._template is None:
            self._template = ChatTemplate(await self.chat_template_info())
        return self._template.render(messages, template_kwargs=template_kwargs)
