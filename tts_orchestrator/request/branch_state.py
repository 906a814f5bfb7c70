"""One branch of a request as the presenters see it: its text split into thinking and answer,
its token counts, its usage, and the abort-and-continue interventions it went through."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from tts_orchestrator.actors.jobs import BranchChunk
from tts_orchestrator.state.records import BranchRecord, RecordStatus
from verifiers.reasoning import ReasoningSplitter


@dataclass(frozen=True)
class Intervention:
    """Cut a branch and continue it from `prompt + generated + injected` (abort-and-continue)."""

    branch: int
    rule: str
    reason: str
    injected: str
    max_tokens: int
    #: The TrimR preset whose rules decided (None: a thinking-budget cut).
    preset: str | None = None


@dataclass
class BranchState:
    index: int
    seed: int | None
    splitter: ReasoningSplitter
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    tokens: int = 0
    logprob_sum: float = 0.0
    logprob_n: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    abort_reason: str | None = None
    worker: str | None = None
    answer: str | None = None
    finished_at: float | None = None
    raw: list[str] = field(default_factory=list)
    thinking_tokens: int = 0
    segment_base: int = 0
    interventions: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: Aborted by DeepConf's gate (its confidence fell below the warm-up threshold).
    pruned: bool = False

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.error is not None or self.aborted

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    @property
    def mean_logprob(self) -> float | None:
        return self.logprob_sum / self.logprob_n if self.logprob_n else None

    def text(self) -> tuple[str, str]:
        return "".join(self.reasoning), "".join(self.content)

    def add(self, item: BranchChunk) -> tuple[str, str]:
        if item.worker:
            self.worker = item.worker
        if item.error is not None:
            self.error = item.error
            return "", ""
        chunk = item.chunk
        assert chunk is not None
        was_thinking = self.splitter.in_thinking
        self.raw.append(chunk.text)
        r, c = self.splitter.feed(chunk.text)
        # A chunk that opens or closes the thinking block counts as thinking.
        if was_thinking or self.splitter.in_thinking:
            self.thinking_tokens += chunk.n_tokens
        self.tokens += chunk.n_tokens
        if chunk.token_logprobs:
            self.logprob_sum += math.fsum(chunk.token_logprobs)
            self.logprob_n += len(chunk.token_logprobs)
        if chunk.timings and not self.interventions:
            self.timings = chunk.timings
        if chunk.usage is not None:
            self.tokens = self.segment_base + (chunk.usage.completion_tokens or 0) or self.tokens
            if self.interventions:  # a continuation: its prompt is ours + what we generated
                self.interventions[-1]["cached_prompt_tokens"] = chunk.usage.cached_prompt_tokens
                self.interventions[-1]["continuation_prompt_tokens"] = chunk.usage.prompt_tokens
            else:
                self.prompt_tokens = chunk.usage.prompt_tokens
                self.cached_prompt_tokens = chunk.usage.cached_prompt_tokens or 0
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            self.finished_at = time.monotonic()
            r2, c2 = self.splitter.finish()
            r, c = r + r2, c + c2
        self.reasoning.append(r)
        self.content.append(c)
        return r, c

    def intervene(self, iv: Intervention) -> tuple[str, str]:
        """Take the injected text as if generated, and start a new segment."""
        self.interventions.append(
            {
                "rule": iv.rule,
                **({"preset": iv.preset} if iv.preset else {}),
                "reason": iv.reason,
                "at_tokens": self.tokens,
                "thinking_tokens": self.thinking_tokens,
            }
        )
        self.segment_base = self.tokens
        self.finish_reason = None
        self.raw.append(iv.injected)
        r, c = self.splitter.feed(iv.injected)
        self.reasoning.append(r)
        self.content.append(c)
        return r, c

    def generated(self) -> str:
        return "".join(self.raw)

    def record(self) -> BranchRecord:
        if self.error is not None:
            status = RecordStatus.FAILED
        elif self.finish_reason is not None:
            status = RecordStatus.FINISHED
        else:
            status = RecordStatus.CANCELLED
        return BranchRecord(
            index=self.index,
            seed=self.seed,
            status=status,
            tokens=self.tokens,
            answer=self.answer,
            finish_reason=self.finish_reason,
            aborted=self.aborted or status is RecordStatus.CANCELLED,
            abort_reason=self.abort_reason or self.error,
            pruned=self.pruned,
        )

    def detail(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "seed": self.seed,
            "tokens": self.tokens,
            "answer": self.answer,
            "finish_reason": self.finish_reason,
            "aborted": self.aborted,
            "pruned": self.pruned,
            "abort_reason": self.abort_reason or self.error,
            "worker": self.worker,
            "interventions": self.interventions,
        }
