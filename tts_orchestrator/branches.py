"""Per-request view of its branches: text, tokens, usage, thinking split, and what to stream."""

from __future__ import annotations

from dataclasses import dataclass, field

from tts_orchestrator.actors.jobs import BranchChunk
from tts_orchestrator.exceptions import WorkerError
from tts_orchestrator.orchestrator_events import OutputEvent
from tts_orchestrator.state.records import BranchRecord, RecordStatus, RecordUsage
from verifiers.families import ModelFamily
from verifiers.reasoning import ReasoningSplitter


@dataclass
class BranchState:
    index: int
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
    worker: str | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.error is not None

    def add(self, item: BranchChunk) -> tuple[str, str]:
        if item.worker:
            self.worker = item.worker
        if item.error is not None:
            self.error = item.error
            return "", ""
        chunk = item.chunk
        assert chunk is not None
        r, c = self.splitter.feed(chunk.text)
        self.tokens += chunk.n_tokens
        if chunk.token_logprobs:
            self.logprob_sum += sum(chunk.token_logprobs)
            self.logprob_n += len(chunk.token_logprobs)
        if chunk.usage is not None:
            self.tokens = chunk.usage.completion_tokens or self.tokens
            self.prompt_tokens = chunk.usage.prompt_tokens
            self.cached_prompt_tokens = chunk.usage.cached_prompt_tokens or 0
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
            r2, c2 = self.splitter.finish()
            r, c = r + r2, c + c2
        self.reasoning.append(r)
        self.content.append(c)
        return r, c

    def record(self) -> BranchRecord:
        status = RecordStatus.FAILED if self.error else RecordStatus.FINISHED
        if not self.done:
            status = RecordStatus.CANCELLED
        return BranchRecord(
            index=self.index,
            status=status,
            tokens=self.tokens,
            finish_reason=self.finish_reason,
            aborted=not self.done,
            abort_reason=self.error,
        )


class BranchTracker:
    """Single-branch streaming: every delta goes out as it arrives."""

    def __init__(self, n_branches: int, *, family: ModelFamily) -> None:
        self.branches = [BranchState(i, ReasoningSplitter(family)) for i in range(n_branches)]
        self.finish_reason: str | None = None

    def observe(self, item: BranchChunk) -> list[OutputEvent]:
        b = self.branches[item.branch]
        r, c = b.add(item)
        if b.error is not None:
            raise WorkerError(f"generation failed on {b.worker or 'a worker'}: {b.error}")
        if b.finish_reason is not None:
            self.finish_reason = b.finish_reason
        return [OutputEvent(reasoning=r, content=c)] if (r or c) else []

    def final_event(self) -> OutputEvent:
        return OutputEvent(finish_reason=self.finish_reason or "stop", usage=self.usage())

    def answer_text(self) -> str:
        return "".join(self.branches[0].content)

    def reasoning_text(self) -> str:
        return "".join(self.branches[0].reasoning)

    def usage(self) -> RecordUsage:
        prompt = sum(b.prompt_tokens for b in self.branches)
        completion = sum(b.tokens for b in self.branches)
        return RecordUsage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_prompt_tokens=sum(b.cached_prompt_tokens for b in self.branches),
            total_tokens=prompt + completion,
        )

    def branch_records(self) -> list[BranchRecord]:
        return [b.record() for b in self.branches]
