"""What the API process asks a pool actor to run, and what streams back (Ray-serialisable)."""

from __future__ import annotations

from collections.abc import Collection

from pydantic import BaseModel, Field

from tts_orchestrator.backends.base import CompletionChunk, SamplingParams


class BranchSpec(BaseModel):
    """One branch: a raw prompt and its sampling params (the seed differs per branch)."""

    index: int
    prompt: str
    params: SamplingParams
    prefer_worker: str | None = Field(
        None, description="Run on this worker if healthy (a continuation reuses its cache)."
    )


class GenerationJob(BaseModel):
    request_id: str
    branches: list[BranchSpec] = Field(min_length=1)

    def part(self, indices: Collection[int], *, suffix: str = "") -> GenerationJob:
        """The job of only these branches (a request's later start gets its own ``suffix``)."""
        return GenerationJob(
            request_id=self.request_id + suffix,
            branches=[b for b in self.branches if b.index in indices],
        )


class BranchChunk(BaseModel):
    """A piece of one branch's stream; `error` set means the branch failed."""

    branch: int
    chunk: CompletionChunk | None = None
    error: str | None = None
    worker: str | None = None
