"""The scripted engine: an in-process worker that streams what a script says, when it says.

A deterministic implementation of the worker contract for tests and the in-process request
path (no HTTP, no model): each engine request asks a :data:`ScriptFn` for its :class:`Script`
(tokens, their timing and logprobs, usage, a failure on cue). Like a llama.cpp server it has
``n_parallel`` slots; a request waits for a free slot, and an aborted or cancelled request frees
its slot at once (``busy`` says how many are taken, as ``/slots`` would).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from tts_orchestrator.backends.base import (
    CompletionChunk,
    SamplingParams,
    Usage,
    WorkerBackend,
    WorkerMetrics,
)
from tts_orchestrator.exceptions import WorkerError

_TOKEN = re.compile(r"\s*\S+|\s+")


def split_tokens(text: str) -> tuple[str, ...]:
    """Word-sized pieces (leading whitespace kept) whose concatenation is ``text``."""
    return tuple(_TOKEN.findall(text))


@dataclass(frozen=True)
class Script:
    """What one engine request streams."""

    pieces: tuple[str, ...]
    #: Seconds before each piece (the first one too: time to first token).
    delay_s: float = 0.0
    #: The sampled token's logprob per piece (None: the engine reports none).
    logprobs: tuple[float, ...] | None = None
    #: DeepConf token confidence per piece, as an engine returning top logprobs gives it
    #: (None: it returns no top logprobs). Sent only when the request asks for logprobs.
    confidences: tuple[float, ...] | None = None
    #: Raise a worker error after this many pieces (None: never).
    fail_after: int | None = None
    finish_reason: str = "stop"

    @classmethod
    def text(cls, text: str, **kwargs: object) -> Script:
        return cls(pieces=split_tokens(text), **kwargs)  # type: ignore[arg-type]


ScriptFn = Callable[[str, SamplingParams], Script]


@dataclass
class ScriptedBackend(WorkerBackend):
    """An in-process engine with ``n_parallel`` slots that plays scripts."""

    script: ScriptFn
    name: str = "scripted/0"
    n_parallel: int = 4
    healthy: bool = True
    #: Every engine request seen: (request id, prompt, params), for assertions.
    requests: list[tuple[str, str, SamplingParams]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    busy: int = 0
    _slots: asyncio.Semaphore | None = field(default=None, init=False, repr=False)
    _aborts: dict[str, asyncio.Event] = field(default_factory=dict, init=False, repr=False)

    def _slot(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.n_parallel)
        return self._slots

    async def stream_completion(
        self, prompt: str, params: SamplingParams, *, request_id: str
    ) -> AsyncIterator[CompletionChunk]:
        if not self.healthy:
            raise WorkerError(f"{self.name} is down")
        self.requests.append((request_id, prompt, params))
        script = self.script(prompt, params)
        aborted = self._aborts.setdefault(request_id, asyncio.Event())
        async with self._slot():
            self.busy += 1
            try:
                async for chunk in self._play(script, prompt, params, aborted):
                    yield chunk
            finally:
                self.busy -= 1
                self._aborts.pop(request_id, None)

    async def _play(
        self, script: Script, prompt: str, params: SamplingParams, aborted: asyncio.Event
    ) -> AsyncIterator[CompletionChunk]:
        produced, text = 0, ""
        finish = script.finish_reason
        for i, piece in enumerate(script.pieces):
            if script.fail_after is not None and i >= script.fail_after:
                raise WorkerError(f"{self.name} failed mid-stream")
            if produced >= params.max_tokens:
                finish = "length"
                break
            if script.delay_s:
                await asyncio.sleep(script.delay_s)
            if aborted.is_set():
                return
            stop = next((s for s in params.stop if s in text + piece), None)
            if stop is not None:
                cut = (text + piece).index(stop) - len(text)
                if cut > 0:
                    yield CompletionChunk(text=piece[:cut], n_tokens=1)
                    produced += 1
                finish = "stop"
                break
            text += piece
            produced += 1
            lp = None if script.logprobs is None else [script.logprobs[i]]
            conf = None
            if script.confidences is not None and params.logprobs is not None:
                conf = [script.confidences[i]]
            yield CompletionChunk(text=piece, n_tokens=1, token_logprobs=lp, token_confidence=conf)
        else:
            if script.fail_after is not None and script.fail_after <= len(script.pieces):
                raise WorkerError(f"{self.name} failed mid-stream")
        usage = Usage(prompt_tokens=len(split_tokens(prompt)), completion_tokens=produced)
        yield CompletionChunk(finish_reason=finish, usage=usage)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        event = self._aborts.get(request_id)
        if event is not None:
            event.set()

    async def health(self) -> bool:
        return self.healthy

    async def metrics(self) -> WorkerMetrics:
        return WorkerMetrics(requests_running=float(self.busy))

    async def tokenize(self, text: str) -> list[int]:
        return list(range(len(split_tokens(text))))

    async def apply_chat_template(
        self,
        messages: Sequence[dict[str, str]],
        *,
        template_kwargs: dict[str, object] | None = None,
    ) -> str:
        turns = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        return turns + "<|assistant|>"
