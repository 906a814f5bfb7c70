"""Wire models of the OpenAI-compatible API plus the `tts` extension block.

Request models convert themselves into what the pipeline runs (`to_sampling_params`).
Unknown top-level OpenAI fields are accepted and ignored (clients send many); the `tts`
block is strict, so a typo there is a 400 naming the field.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from policies.modes import ThinkingMode
from tts_orchestrator.backends.base import SamplingParams
from verifiers.confidence import ConfidenceConfig, ConfidenceMeasure, ConfidenceVote


class ConfidenceOptions(BaseModel):
    """Per-request overrides of the server's DeepConf settings (`tts.confidence`)."""

    model_config = ConfigDict(extra="forbid")

    window: int | None = Field(None, ge=1, le=32768, description="Tokens per sliding group.")
    tail: int | None = Field(None, ge=1, le=32768, description="Tokens of tail confidence.")
    top_logprobs: int | None = Field(None, ge=1, le=20, description="Top-k logprobs per token.")
    keep: float | None = Field(None, gt=0.0, le=1.0, description="η: confident share voting.")
    prune_keep: float | None = Field(
        None, gt=0.0, le=1.0, description="η of the threshold: its (1 - η) warm-up quantile."
    )
    warmup: int | None = Field(None, ge=1, le=64, description="Branches setting the threshold.")
    tau: float | None = Field(None, gt=0.5, le=1.0, description="Weighted share that stops.")
    measure: ConfidenceMeasure | None = Field(None, description="lowest_group | tail | mean.")
    vote: ConfidenceVote | None = Field(None, description="most_confident | threshold.")
    warmup_first: StrictBool | None = Field(
        None, description="Start the other branches once the warm-up set the threshold."
    )


# Seeds are 64-bit signed integers (what engines and OpenAI accept); larger ones are a 400.
_SEED_MIN, _SEED_MAX = -(2**63), 2**63 - 1


class TtsOptions(BaseModel):
    """Per-request test-time-scaling controls (`tts` in the body or the client's extra_body)."""

    model_config = ConfigDict(extra="forbid")

    n_branches: int | None = Field(None, ge=1, description="Parallel reasoning branches.")
    aggregation: Literal["majority", "weighted", "first_finish", "confidence"] = "majority"
    early_stop: Literal["none", "unanimous_window", "beta", "confidence"] = "none"
    early_stop_window: int = Field(3, ge=1, le=64, description="w for unanimous_window.")
    early_stop_threshold: float = Field(0.95, gt=0.5, lt=1.0, description="For `beta`.")
    latency_budget_s: float | None = Field(None, gt=0, description="Answer within this time.")
    pool: str | None = Field(None, description="Pin the request to a pool.")
    seed: int | None = Field(
        None, ge=_SEED_MIN, le=_SEED_MAX, description="Base seed; branch i uses seed + i."
    )
    trim: bool | None = Field(None, description="TrimR trimming of overthinking (None: default).")
    thinking_budget: int | None = Field(
        None, ge=1, description="Thinking tokens per branch before it is told to answer."
    )
    mode: ThinkingMode | None = Field(
        None, description="fast | slow | auto thinking (None: reasoning_effort, then config)."
    )
    confidence: ConfidenceOptions | None = Field(
        None, description="DeepConf settings of this request (unset ones: the server's)."
    )

    @property
    def uses_confidence(self) -> bool:
        return self.aggregation == "confidence" or self.early_stop == "confidence"

    def confidence_config(self, defaults: ConfidenceConfig) -> ConfidenceConfig:
        """The server's DeepConf defaults with this request's overrides."""
        if self.confidence is None:
            return defaults
        return defaults.model_copy(update=self.confidence.model_dump(exclude_none=True))

    def warmup_held(self, defaults: ConfidenceConfig) -> int | None:
        """Warm-up branches that run before the others start (a confidence early stop in
        DeepConf-online's order, ``warmup_first``); None when every branch starts at once."""
        if self.early_stop != "confidence":
            return None
        config = self.confidence_config(defaults)
        return config.warmup if config.warmup_first else None


class _OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1, description="Only n=1; use tts.n_branches for branches.")
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=_SEED_MIN, le=_SEED_MAX)
    user: str | None = None
    tts: TtsOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 16:
            raise ValueError("at most 16 stop sequences")
        for s in [v] if isinstance(v, str) else v or []:
            _encodable(s)
        return v

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def to_sampling_params(self, *, default_max_tokens: int, max_tokens_cap: int) -> SamplingParams:
        max_tokens = self.requested_max_tokens() or default_max_tokens
        return SamplingParams(
            max_tokens=min(max_tokens, max_tokens_cap),
            temperature=0.7 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            seed=self.seed,
            stop=self.stop_list(),
            logprobs=self.logprobs_count(),
        )

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def logprobs_count(self) -> int | None:
        return None


def _encodable(text: str) -> str:
    """JSON may carry lone surrogates (\\ud800): not text a tokenizer can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text is not valid Unicode (lone surrogate)") from exc
    return text


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return _encodable(self.content)
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return _encodable("".join(parts))


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    chat_template_kwargs: dict[str, Any] | None = None
    reasoning_effort: str | None = Field(
        None, description="OpenAI's low | medium | high (mapped to a mode by `modes.effort`)."
    )

    @model_validator(mode="after")
    def _text_only(self) -> ChatCompletionRequest:
        for m in self.messages:
            m.text()  # raises on non-text parts
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def message_dicts(self) -> list[dict[str, str]]:
        role = {"developer": "system"}
        return [{"role": role.get(m.role, m.role), "content": m.text()} for m in self.messages]


class CompletionRequest(_OpenAIRequest):
    prompt: str = Field(..., description="A single raw prompt (lists are not supported).")

    @field_validator("prompt")
    @classmethod
    def _prompt_text(cls, v: str) -> str:
        return _encodable(v)

    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False

    def logprobs_count(self) -> int | None:
        return self.logprobs


# -- responses ---------------------------------------------------------------------------------


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatResponseMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    tts: dict[str, Any] | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo
    tts: dict[str, Any] | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tts-orchestrator"
    pools: list[str] = Field(default_factory=list)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
