"""A prepared request (what `Orchestrator.prepare` hands to `run`) and its record's fields."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tts_orchestrator.actors.local import PoolClient
from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.exceptions import TTSError
from tts_orchestrator.modes.resolution import ModeChoice
from tts_orchestrator.protocol import TtsOptions
from tts_orchestrator.request.branches import Presenter
from tts_orchestrator.request.shape import Phase, RequestShape
from tts_orchestrator.state.base import StateStore
from tts_orchestrator.state.records import (
    BranchRecord,
    Endpoint,
    RecordError,
    RecordStatus,
    RequestRecord,
)
from verifiers.families import ModelFamily


@dataclass
class PreparedRequest:
    """A request ready to run: its decided shape, the phase running now, and its progress."""

    id: str
    endpoint: Endpoint
    model: str
    pool: PoolClient
    shape: RequestShape
    deadline: float
    problem: str = ""
    #: The thinking-mode decision (updated when a probe stays fast or escalates).
    mode: ModeChoice | None = None
    #: The phase running now: the shape's first, then its escalation if a probe escalates.
    phase: Phase = field(init=False)
    #: Id of the API key that made the request; only that key may read or cancel it.
    owner: str | None = None
    created: float = field(default_factory=time.monotonic)
    #: Seconds spent in `prepare` (mode, template, size check, plan; the record is written by
    #: `run`).
    prepare_s: float = 0.0
    #: When `run` started and when the pool's first chunk reached it (monotonic).
    started_at: float = 0.0
    first_chunk_at: float | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_reason: str | None = None
    #: The record `run` writes first: once the engine requests are on their way, so that the
    #: Redis round trip (and its ~0.4 ms of this loop) is not on the time to first token.
    record: RequestRecord | None = None
    _recorded: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.phase = self.shape.first

    @property
    def prompt(self) -> str:
        return self.phase.prompt

    @property
    def family(self) -> ModelFamily:
        return self.phase.family

    @property
    def params(self) -> SamplingParams:
        return self.phase.params

    @property
    def tts(self) -> TtsOptions:
        return self.phase.tts

    @property
    def n_branches(self) -> int:
        return self.phase.n_branches

    def start_record(self, store: StateStore) -> None:
        """Start the record's first write (once)."""
        if self.record is not None and self._recorded is None:
            self._recorded = asyncio.ensure_future(store.create_request(self.record))

    async def record_written(self) -> None:
        """Wait for the first write (if started); raises its failure."""
        if self._recorded is not None:
            await asyncio.shield(self._recorded)  # a cancelled request still gets its record


def new_record(p: PreparedRequest, *, replica_id: str) -> RequestRecord:
    """The record a request starts with (status running, one entry per branch)."""
    base_seed = p.tts.seed if p.tts.seed is not None else p.params.seed
    return RequestRecord(
        mode=p.mode.model_dump(exclude_none=True) if p.mode is not None else None,
        id=p.id,
        model=p.model,
        pool=p.shape.pool,
        endpoint=p.endpoint,
        params={"sampling": p.params.model_dump(), "tts": p.tts.model_dump(exclude_none=True)},
        status=RecordStatus.RUNNING,
        replica_id=replica_id,
        owner=p.owner,
        branches=[
            BranchRecord(index=i, seed=None if base_seed is None else base_seed + i)
            for i in range(p.n_branches)
        ],
    )


def final_fields(
    p: PreparedRequest,
    presenter: Presenter,
    status: RecordStatus,
    error: TTSError | None,
    *,
    ttft: float | None,
    total: float,
) -> dict[str, Any]:
    """The record fields a finished (or failed, or cancelled) request is updated with.

    Timings: ``prepare_s`` (in `prepare`), ``first_chunk_s`` (run start → the pool's first
    chunk in this process), ``ttft_s`` (run start → first text out), the engine's own
    ``worker_prompt_ms`` / ``worker_ms_per_token``, ``total_s``."""
    timings: dict[str, float] = {"total_s": round(total, 6), **presenter.worker_timings()}
    timings["prepare_s"] = round(p.prepare_s, 6)
    if ttft is not None:
        timings["ttft_s"] = round(ttft, 6)
    if p.first_chunk_at is not None:  # run start → the pool's first chunk here
        timings["first_chunk_s"] = round(p.first_chunk_at - p.started_at, 6)
    fields: dict[str, Any] = {
        "status": status,
        "timings": timings,
        "usage": presenter.usage(),
        "finish_reason": presenter.finish_reason,
        "answer": presenter.answer_text(),
        "vote": presenter.vote_detail(),
        "tokens": presenter.tokens_detail(),
        "trims": {"interventions": iv} if (iv := presenter.interventions_detail()) else None,
        "mode": p.mode.model_dump(exclude_none=True) if p.mode is not None else None,
    }
    if error is not None:
        fields["error"] = RecordError(message=error.message, type=error.error_type)
    elif status is RecordStatus.CANCELLED:
        fields["error"] = RecordError(
            message=f"cancelled: {p.cancel_reason or 'client disconnected'}", type="cancelled"
        )
    return fields
