"""The worker contract: one async interface every generation backend implements.

A backend drives one inference worker (a llama.cpp server, a vLLM server, or the replay
recorder) with *raw prompts*: the chat template is rendered once, so a later continuation is
exactly ``prompt + generated + injected`` and the worker's prefix cache serves it.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence

from pydantic import BaseModel, ConfigDict, Field


class SamplingParams(BaseModel):
    """Sampling settings for one engine request (what `/v1/completions` takes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(512, ge=1, description="Upper bound on generated tokens.")
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, description="Per-request seed; branches use distinct seeds.")
    stop: tuple[str, ...] = Field((), description="Stop strings (not included in the output).")
    logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description="Return the sampled token's logprob (and this many top ones).",
    )
    grammar: str | None = Field(
        None, description="GBNF grammar (llama.cpp `grammar`, vLLM `structured_outputs`)."
    )
    ignore_eos: bool = Field(
        False, description="Keep generating past end-of-sequence (profiling: exact lengths)."
    )


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int | None = Field(
        None, description="Prompt tokens served from the worker's prefix cache, when it says."
    )


class CompletionChunk(BaseModel):
    """One streamed piece of a completion. The last chunk carries `finish_reason` (and usage)."""

    text: str = ""
    n_tokens: int = 0
    token_logprobs: list[float] | None = None
    token_confidence: list[float] | None = Field(
        None,
        description="DeepConf token confidence per token (minus the mean of its top-k "
        "logprobs), when the engine returned top logprobs.",
    )
    finish_reason: str | None = None
    usage: Usage | None = None
    timings: dict[str, float] | None = Field(None, description="Engine timings, when reported.")


class WorkerMetrics(BaseModel):
    """A snapshot of a worker's load and counters (normalised across engines)."""

    requests_running: float = 0.0
    requests_waiting: float = 0.0
    prompt_tokens_total: float = 0.0
    prompt_tokens_cached_total: float = 0.0
    generation_tokens_total: float = 0.0
    spec_draft_tokens_total: float = 0.0
    spec_accepted_tokens_total: float = 0.0
    spec_drafts_total: float = 0.0
    raw: dict[str, float] = Field(default_factory=dict)


class WorkerBackend(abc.ABC):
    """An inference worker driven with raw prompts. Every stream is cancellable.

    Cancelling the task that iterates :meth:`stream_completion` (or calling :meth:`abort`
    with its request id) must release the engine request: close the HTTP stream for
    llama.cpp (which frees the slot) and vLLM (which aborts the request).
    """

    #: Human-readable identity used in logs, records and errors.
    name: str

    @abc.abstractmethod
    def stream_completion(
        self, prompt: str, params: SamplingParams, *, request_id: str
    ) -> AsyncIterator[CompletionChunk]:
        """Stream the completion of a raw prompt. The final chunk has `finish_reason`."""

    @abc.abstractmethod
    async def abort(self, request_id: str) -> None:
        """Abort an in-flight request; a no-op when it already finished."""

    @abc.abstractmethod
    async def health(self) -> bool:
        """True when the worker answers and can take requests."""

    @abc.abstractmethod
    async def metrics(self) -> WorkerMetrics:
        """Current load and counters."""

    @abc.abstractmethod
    async def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added)."""

    async def count_tokens(self, text: str) -> int:
        return len(await self.tokenize(text))

    @abc.abstractmethod
    async def apply_chat_template(
        self,
        messages: Sequence[dict[str, str]],
        *,
        template_kwargs: dict[str, object] | None = None,
    ) -> str:
        """Render chat messages to the raw prompt the model expects (generation prompt added)."""

    async def settle(self, *, busy_at_most: int, timeout_s: float = 1.0) -> None:  # noqa: B027
        """Wait until the engine has released aborted requests (engines whose prefix cache is
        per slot need this before a continuation, or it lands on a cold slot)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources owned by this backend (not the shared HTTP client)."""
