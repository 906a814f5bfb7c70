"""What the service remembers about a request: the record readable at ``GET /v1/requests/{id}``.

A record is written when a request is accepted and updated as it runs; each branch of a
branch-parallel request has its own :class:`BranchRecord`. Optional ``mode`` / ``trims`` /
``plan`` / ``vote`` hold the detail of later features (router, TrimR, latency plan, vote).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tts_orchestrator.state.schema import REQUEST_ID_PATTERN


class RecordStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({RecordStatus.FINISHED, RecordStatus.FAILED, RecordStatus.CANCELLED})


class Endpoint(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RecordUsage(_Record):
    """Token counts summed over every branch of the request."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(
        default=0, ge=0, description="Completion tokens inside thinking (all branches)."
    )
    cached_prompt_tokens: int = Field(
        default=0, ge=0, description="Prompt tokens the worker had cached."
    )
    total_tokens: int = Field(default=0, ge=0)


class RecordError(_Record):
    """Why a request failed, in the terms of the OpenAI error schema."""

    message: str
    type: str


class BranchRecord(_Record):
    """One reasoning branch of a request."""

    index: int = Field(ge=0)
    seed: int | None = None
    status: RecordStatus = RecordStatus.QUEUED
    tokens: int = Field(default=0, ge=0, description="Tokens generated so far.")
    answer: str | None = Field(default=None, description="The answer extracted from this branch.")
    finish_reason: str | None = None
    aborted: bool = False
    abort_reason: str | None = None
    pruned: bool = Field(default=False, description="Pruned by DeepConf's confidence gate.")
    confidence: float | None = Field(
        default=None, description="The branch's confidence vote weight (confidence requests)."
    )


class RequestRecord(_Record):
    """One request, as stored in Redis and returned by ``GET /v1/requests/{id}``."""

    id: str = Field(pattern=REQUEST_ID_PATTERN)
    created_at: float = Field(default_factory=time.time, description="Unix time, seconds.")
    model: str
    pool: str
    endpoint: Endpoint
    params: dict[str, Any] = Field(
        default_factory=dict, description="Sampling parameters and `tts` options as requested."
    )
    status: RecordStatus = RecordStatus.QUEUED
    timings: dict[str, float] = Field(
        default_factory=dict, description="Seconds: ttft_s, total_s, queue_s, vote_s, ..."
    )
    usage: RecordUsage = Field(default_factory=RecordUsage)
    finish_reason: str | None = None
    answer: str | None = Field(default=None, description="The returned `content`.")
    error: RecordError | None = None
    replica_id: str | None = Field(
        default=None, description="The API replica that owns the request."
    )
    owner: str | None = Field(
        default=None, description="Id of the API key that made the request (None: auth off)."
    )
    mode: dict[str, Any] | None = Field(default=None, description="Fast/slow routing decision.")
    trims: dict[str, Any] | None = Field(default=None, description="TrimR interventions.")
    plan: dict[str, Any] | None = Field(default=None, description="Latency-policy plan.")
    vote: dict[str, Any] | None = Field(
        default=None, description="Vote counts, winner, early stop."
    )
    tokens: dict[str, int] | None = Field(
        default=None, description="Generated, reasoning, pruned, aborted and trimmed tokens."
    )
    branches: list[BranchRecord] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_branches(self) -> RequestRecord:
        indexes = [b.index for b in self.branches]
        if len(indexes) != len(set(indexes)):
            raise ValueError(f"branch indexes must be unique: {indexes}")
        return self


#: Fields set only when the record is created (branches change through ``update_branch``).
IMMUTABLE_REQUEST_FIELDS = frozenset({"id", "created_at", "branches"})
#: Fields ``update_branch`` may not change.
IMMUTABLE_BRANCH_FIELDS = frozenset({"index"})


def json_update(
    model: type[BaseModel], fields: Mapping[str, Any], *, immutable: frozenset[str]
) -> dict[str, Any]:
    """Validate a partial update of ``model`` field by field; return it JSON-compatible.

    Raises ``ValueError`` (pydantic's ``ValidationError`` included) for an unknown or
    immutable field or an invalid value, so a bad update never reaches the store.
    """
    unknown = sorted(set(fields) - set(model.model_fields))
    if unknown:
        raise ValueError(f"unknown {model.__name__} field(s): {', '.join(unknown)}")
    frozen = sorted(set(fields) & immutable)
    if frozen:
        raise ValueError(f"{model.__name__} field(s) cannot be updated: {', '.join(frozen)}")
    probe = model.model_construct()
    for name, value in fields.items():
        setattr(probe, name, value)  # validate_assignment checks the value against the field
    return probe.model_dump(mode="json", include=set(fields))
