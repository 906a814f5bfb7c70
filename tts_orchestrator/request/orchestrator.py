"""One request's life: resolve the pool → render → admit → fan out → observe → answer → record.

The API layer calls `prepare` (every check that can fail with a clean HTTP status happens
here, before a stream starts) and then iterates `run`, which yields `OutputEvent`s that the
routes turn into OpenAI responses or SSE chunks. Errors are raised as `TTSError`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tts_orchestrator.actors.jobs import BranchChunk, BranchSpec, GenerationJob
from tts_orchestrator.actors.local import PoolClient
from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.config import KeyLimits, Settings
from tts_orchestrator.exceptions import (
    DeadlineExceeded,
    ModelNotFound,
    NoWorkerAvailable,
    PayloadTooLarge,
    RequestError,
    TTSError,
)
from tts_orchestrator.metrics import ServiceMetrics
from tts_orchestrator.modes.requests import (
    ModeSetup,
    probe_answers,
    probe_claims,
    raw_setup,
    render_chat,
)
from tts_orchestrator.modes.resolution import ModeChoice, ModeResolver, RunMode
from tts_orchestrator.planning.live import LivePlanner
from tts_orchestrator.planning.planner import Plan, PlanRequest
from tts_orchestrator.protocol import ChatCompletionRequest, CompletionRequest, TtsOptions
from tts_orchestrator.request.branches import Presenter, SinglePresenter, VotingPresenter
from tts_orchestrator.request.confidence import BranchConfidence
from tts_orchestrator.request.events import OutputEvent
from tts_orchestrator.request.prepared import PreparedRequest, final_fields, new_record
from tts_orchestrator.request.shape import Caps, decide_shape
from tts_orchestrator.request.streams import BranchStreams
from tts_orchestrator.state.base import CancelListener, StateStore
from tts_orchestrator.state.records import (
    Endpoint,
    RecordStatus,
    RequestRecord,
)
from tts_orchestrator.trim.trimmer import BranchTrimmer
from tts_orchestrator.trim.verifier_service import Verifier
from verifiers.families import get_family
from verifiers.trim_presets import preset_for
from verifiers.trimr import TrimRConfig
from verifiers.voting import EquivalenceFn

log = logging.getLogger(__name__)


class Orchestrator:
    """Runs requests against the pools; owns nothing but references to shared services."""

    def __init__(
        self,
        *,
        settings: Settings,
        pools: dict[str, PoolClient],
        store: StateStore,
        metrics: ServiceMetrics,
        replica_id: str,
        equivalent: EquivalenceFn,
        verifier: Verifier | None = None,
        verifier_workers: list[Any] | None = None,
        planner: LivePlanner | None = None,
    ) -> None:
        self.planner = planner
        self.verifier = verifier
        #: Ray handles of the verifier actors (for operators' views).
        self.verifier_workers = verifier_workers or []
        self.settings = settings
        self.equivalent = equivalent
        self.pools = pools
        self.store = store
        self.metrics = metrics
        self.replica_id = replica_id
        self.modes = ModeResolver(settings.modes)
        for handle in pools.values():
            self.modes.check_family(handle.config.model_family)
        self._running: dict[str, PreparedRequest] = {}
        self._background: set[asyncio.Future[None]] = set()
        self.accepting = True
        self._idle = asyncio.Event()  # set while no request runs
        self._idle.set()
        #: Set by the API lifespan once the cross-replica cancel subscription is up.
        self.cancel_listener: CancelListener | None = None

    # -- admission ---------------------------------------------------------------------------
    def models(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, handle in self.pools.items():
            out.setdefault(handle.config.model, []).append(name)
        return out

    def resolve_pool(self, model: str, tts: TtsOptions) -> PoolClient:
        if tts.pool is not None:
            handle = self.pools.get(tts.pool)
            if handle is None:
                raise RequestError(
                    f"unknown pool {tts.pool!r}; pools: {sorted(self.pools)}", param="tts.pool"
                )
            if handle.config.model != model:
                raise RequestError(
                    f"pool {tts.pool!r} serves {handle.config.model!r}", param="model"
                )
            return handle
        candidates = [h for h in self.pools.values() if h.config.model == model]
        if not candidates:
            raise ModelNotFound(
                f"The model `{model}` does not exist; available: {sorted(self.models())}",
                param="model",
                code="model_not_found",
            )
        return candidates[0]

    async def prepare(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        endpoint: Endpoint,
        *,
        owner: str | None = None,
        limits: KeyLimits | None = None,
    ) -> PreparedRequest:
        """Everything that can fail with a clean HTTP status, before a stream starts: the
        pool, the mode, the prompt's size, and the request's shape within the server's and
        ``limits``' (the API key's) caps."""
        if not self.accepting:
            raise NoWorkerAvailable("the server is shutting down", code="shutting_down")
        began = time.monotonic()
        tts = request.tts or TtsOptions()
        pool = self.resolve_pool(request.model, tts)
        family = get_family(pool.config.model_family)
        setup: ModeSetup
        if isinstance(request, ChatCompletionRequest):
            messages = request.message_dicts()
            resolution = self.modes.resolve(
                family,
                messages=messages,
                mode=tts.mode,
                reasoning_effort=request.reasoning_effort,
                thinking_budget=tts.thinking_budget,
                template_kwargs=request.chat_template_kwargs,
            )
            setup = await render_chat(resolution, pool)
            problem = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        else:
            problem = request.prompt
            resolution = self.modes.resolve(
                family,
                messages=None,
                prompt_text=problem,
                mode=tts.mode,
                thinking_budget=tts.thinking_budget,
            )
            setup = raw_setup(resolution, family, problem)
        escalated = setup.escalation.prompt if setup.escalation else setup.first.prompt
        await self._check_size(pool, escalated)

        async def plan(
            params: SamplingParams, tts: TtsOptions, setup: ModeSetup, max_branches: int
        ) -> Plan | None:
            return await self._plan(
                request.model,
                pool,
                setup.first.prompt,
                params,
                tts,
                setup,
                max_branches=max_branches,
            )

        shape = await decide_shape(
            request,
            pool=pool.config.name,
            setup=setup,
            settings=self.settings,
            caps=Caps.of(self.settings, limits),
            plan=plan,
        )
        prefix = "chatcmpl" if endpoint is Endpoint.CHAT else "cmpl"
        prepared = PreparedRequest(
            id=f"{prefix}-{uuid.uuid4().hex}",
            endpoint=endpoint,
            model=request.model,
            pool=self.pools[shape.pool],
            shape=shape,
            deadline=time.monotonic() + self.settings.server.request_timeout_s,
            problem=problem,
            mode=setup.choice,
            owner=owner,
        )
        if not setup.probing:
            self._count_mode(setup.choice)
        record = self._new_record(prepared)
        if shape.plan is not None:
            record.plan = shape.plan.record()
        prepared.record = record
        prepared.prepare_s = time.monotonic() - began
        return prepared

    async def _plan(
        self,
        model: str,
        pool: PoolClient,
        prompt: str,
        params: SamplingParams,
        tts: TtsOptions,
        setup: ModeSetup,
        *,
        max_branches: int,
    ) -> Plan | None:
        """The latency policy picks pool × branches × thinking budget for a request with a
        latency budget and no explicit `n_branches` (the user's explicit choice wins)."""
        planner = self.planner.planner if self.planner is not None else None
        if (
            planner is None
            or tts.latency_budget_s is None
            or tts.n_branches is not None
            or not planner.can_plan(model)
            or setup.thinking is None
        ):
            return None
        loads: dict[str, int] = {}
        for running in self._running.values():
            name = running.pool.config.name
            loads[name] = loads.get(name, 0) + running.n_branches
        request = PlanRequest(
            model=model,
            prompt_tokens=await pool.count_tokens(prompt),
            latency_budget_s=tts.latency_budget_s,
            max_tokens=params.max_tokens,
            max_branches=max_branches,
            pool=tts.pool,
            pool_loads=loads,
            mode=setup.thinking,
            warmup_first=tts.warmup_held(self.settings.tts.confidence),
        )
        return planner.plan(request)

    async def _check_size(self, pool: PoolClient, prompt: str) -> None:
        limit = self.settings.server.max_prompt_tokens
        # Every token covers at least one byte, so short prompts need no tokenizer round trip.
        if len(prompt.encode()) <= limit:
            return
        n = await pool.count_tokens(prompt)
        if n > limit:
            raise PayloadTooLarge(
                f"prompt has {n} tokens; the limit is {limit}", param="messages", code="too_large"
            )

    def _new_record(self, p: PreparedRequest) -> RequestRecord:
        return new_record(p, replica_id=self.replica_id)

    # -- cancellation ------------------------------------------------------------------------
    def cancel_local(self, request_id: str, reason: str) -> bool:
        """Cancel a request running on this replica (called by the cancel listener)."""
        p = self._running.get(request_id)
        if p is None:
            return False
        p.cancel_reason = reason
        p.cancel.set()
        return True

    async def shutdown(self, grace_s: float = 0.0) -> None:
        """Graceful stop: refuse new requests, let running ones finish for `grace_s`, then
        cancel what still runs so every engine request is released."""
        self.accepting = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace_s)
        for request_id in list(self._running):
            self.cancel_local(request_id, "server shutting down")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), 5.0)

    # -- execution ---------------------------------------------------------------------------
    def _job(self, p: PreparedRequest) -> GenerationJob:
        base_seed = p.tts.seed if p.tts.seed is not None else p.params.seed
        branches = []
        for i in range(p.n_branches):
            seed = None if base_seed is None else base_seed + i
            if seed is None and p.n_branches > 1:
                seed = uuid.uuid4().int % (2**31) + i
            branches.append(
                BranchSpec(
                    index=i, prompt=p.prompt, params=p.params.model_copy(update={"seed": seed})
                )
            )
        return GenerationJob(request_id=p.id, branches=branches)

    def _presenter(
        self, p: PreparedRequest, job: GenerationJob, *, safe_lead: bool = True
    ) -> Presenter:
        seeds = [b.params.seed for b in job.branches]
        budget = p.tts.thinking_budget if p.family.has_markers else None
        answer_budget = self.settings.tts.answer_budget
        config = p.phase.confidence
        confidence = (
            BranchConfidence(config, p.n_branches, prune=p.tts.early_stop == "confidence")
            if config is not None
            else None
        )
        if p.n_branches == 1:
            return SinglePresenter(
                seeds,
                family=p.family,
                thinking_budget=budget,
                answer_budget=answer_budget,
                max_tokens=p.params.max_tokens,
                confidence=confidence,
            )
        return VotingPresenter(
            seeds,
            family=p.family,
            tts=p.tts,
            equivalent=self.equivalent,
            thinking_budget=budget,
            answer_budget=answer_budget,
            max_tokens=p.params.max_tokens,
            confidence=confidence,
            safe_lead=safe_lead,
        )

    def _attach_trimmers(self, p: PreparedRequest, presenter: Presenter) -> None:
        wanted = p.tts.trim if p.tts.trim is not None else self.settings.trim.default
        if not wanted or self.verifier is None or not p.family.has_markers:
            return
        preset = preset_for(p.family.name)  # the family's rules; `trim.rules` override them
        config = TrimRConfig.model_validate(
            {**preset.trimr.model_dump(), **self.settings.trim.rules}
        )
        for b in presenter.branches:
            presenter.trimmers[b.index] = BranchTrimmer(
                key=f"{p.id}/{b.index}",
                family=p.family,
                preset=preset,
                config=config,
                token_budget=p.params.max_tokens,
                problem=p.problem,
                verifier=self.verifier,
            )

    async def run(self, p: PreparedRequest) -> AsyncIterator[OutputEvent]:
        """Generate, stream and record one prepared request."""
        self._running[p.id] = p
        self._idle.clear()
        if self.cancel_listener is not None:
            self.cancel_listener.watch(p.id)
        phase = self._start_phase(p, None, probe=p.phase.probe)
        start = p.started_at = time.monotonic()
        ttft: float | None = None
        status, error = RecordStatus.FINISHED, None
        self.metrics.inflight.inc()
        try:
            async for event in self._phases(p, phase):
                if ttft is None and (event.reasoning or event.content):
                    ttft = time.monotonic() - start
                    self.metrics.ttft.observe(ttft)
                if event.finish_reason is not None and p.mode is not None:
                    event.tts = {**(event.tts or {}), "mode": p.mode.model_dump(exclude_none=True)}
                yield event
        except TTSError as exc:
            status, error = RecordStatus.FAILED, exc
            raise
        except (asyncio.CancelledError, GeneratorExit):
            status = RecordStatus.CANCELLED
            raise
        finally:
            self.metrics.inflight.dec()
            self._running.pop(p.id, None)
            if not self._running:
                self._idle.set()
            if self.cancel_listener is not None:
                self.cancel_listener.unwatch(p.id)
            if p.cancel.is_set():
                status = RecordStatus.CANCELLED
            total = time.monotonic() - start
            presenter = phase.presenter
            presenter.close_trimmers()
            self.metrics.observe_request(p.endpoint.value, status.value, total, presenter.usage())
            for b in presenter.branch_records():
                if b.confidence is not None:
                    self.metrics.branch_confidence.observe(b.confidence)
            tokens = presenter.tokens_detail()
            self.metrics.pruning_saved_tokens.inc(tokens["saved_by_pruning_estimate"])
            # A task of its own: a cancelled request still gets its record finished.
            fields = final_fields(p, presenter, status, error, ttft=ttft, total=total)
            task = asyncio.ensure_future(self._finish_record(p, presenter, fields))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            await asyncio.shield(task)

    def _start_phase(self, p: PreparedRequest, before: _Phase | None, *, probe: bool) -> _Phase:
        job = self._job(p)
        phase = _Phase(job, self._presenter(p, job, safe_lead=not probe))
        if before is not None:
            phase.presenter.prior_usage = before.presenter.usage()
        if not probe:
            self._attach_trimmers(p, phase.presenter)
        self.metrics.branches.inc(p.n_branches)
        return phase

    async def _phases(self, p: PreparedRequest, phase: _Phase) -> AsyncIterator[OutputEvent]:
        """The request's generation: one phase, or (stage 3) fast probes then maybe slow."""
        if p.shape.escalation is None or p.mode is None:
            async for event in self._generate(p, phase.job, phase.presenter):
                yield event
            return
        held = [e async for e in self._generate(p, phase.job, phase.presenter)]
        answers = probe_answers(phase.presenter.vote_detail(), p.n_branches)
        texts = [b.text()[1] for b in phase.presenter.branches]
        claims = None
        if self.modes.checks_claims and texts:
            claims = await probe_claims(texts[0], timeout_s=self.settings.modes.claim_timeout_s)
        p.mode = self.modes.after_probe(
            p.mode, answers, texts=texts, problem=p.problem, claims=claims
        )
        self._count_mode(p.mode)
        if p.mode.mode is RunMode.FAST:
            # The probes' vote is the answer; their live text was a sample's, not reasoning.
            for event in held:
                if event.content or event.finish_reason is not None:
                    event.reasoning = ""
                    yield event
            return
        p.phase = p.shape.escalation
        slow_phase = self._start_phase(p, phase, probe=False)
        phase.job, phase.presenter = slow_phase.job, slow_phase.presenter
        async for event in self._generate(p, phase.job, phase.presenter):
            yield event

    def _count_mode(self, choice: ModeChoice) -> None:
        self.metrics.mode_decisions.labels(choice.mode.value, choice.stage.value).inc()

    async def _generate(
        self, p: PreparedRequest, job: GenerationJob, presenter: Presenter
    ) -> AsyncIterator[OutputEvent]:
        loop = asyncio.get_running_loop()
        hard_at = self._loop_deadline(p)
        budget = p.tts.latency_budget_s
        soft_at = hard_at
        if budget is not None:  # counted from the request's start: a probe's phases share it
            soft_at = loop.time() + max(0.0, p.started_at + budget - time.monotonic())
        cancel_wait = asyncio.ensure_future(p.cancel.wait())
        streams = BranchStreams(p.pool, p.id)
        streams.start(job.part({b.index for b in job.branches} - set(presenter.waiting)))
        p.start_record(self.store)  # after the branches: they reach the engine first
        budget_reached = False
        nxt: asyncio.Future[BranchChunk | None] | None = None
        try:
            await p.record_written()
            while True:
                nxt = asyncio.ensure_future(streams.next())
                timeout = max(0.0, min(soft_at, hard_at) - loop.time())
                done, _ = await asyncio.wait(
                    {nxt, cancel_wait}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if nxt not in done:
                    if cancel_wait in done:
                        raise RequestError(
                            f"request cancelled: {p.cancel_reason}", code="cancelled"
                        )
                    # The timer may fire a hair early (uvloop counts whole ms): which deadline
                    # bound the wait decides, not a re-read of the clock.
                    if hard_at <= soft_at or loop.time() >= hard_at:
                        raise DeadlineExceeded(
                            "request exceeded the server deadline of "
                            f"{self.settings.server.request_timeout_s:.0f}s"
                        )
                    budget_reached = True  # answer with what we have, and say so
                    break
                item = nxt.result()
                if item is None:
                    # Every started stream ended: waiting branches start now or never.
                    if not self._start_waiting(p, job, presenter, streams, force=True):
                        break
                    continue
                if p.first_chunk_at is None:
                    p.first_chunk_at = time.monotonic()
                for event in await presenter.observe(item):
                    yield event
                for event in await self._act(p, presenter, streams):
                    yield event
                self._start_waiting(p, job, presenter, streams)
                if presenter.all_done:
                    break
        finally:
            cancel_wait.cancel()
            if nxt is not None and not nxt.done():
                nxt.cancel()
            await streams.aclose()
        if budget_reached:
            self.metrics.branches_aborted.labels("latency_budget").inc(
                sum(1 for b in presenter.branches if not b.done)
            )
        await self._fill_usage(p, presenter)
        for event in await presenter.finish(budget_reached=budget_reached):
            yield event

    def _start_waiting(
        self,
        p: PreparedRequest,
        job: GenerationJob,
        presenter: Presenter,
        streams: BranchStreams,
        *,
        force: bool = False,
    ) -> bool:
        """Start the branches that waited for the warm-up's threshold, once the presenter
        releases them (DeepConf-online's order); True if any started."""
        starts = presenter.take_starts(force=force)
        if starts:
            log.debug("%s: starting branches %s after the warm-up", p.id, starts)
            streams.start(job.part(starts, suffix=".w"))
        return bool(starts)

    async def _act(
        self, p: PreparedRequest, presenter: Presenter, streams: BranchStreams
    ) -> list[OutputEvent]:
        """Carry out what the presenter decided: abort losers, cut-and-continue branches."""
        aborts = presenter.take_aborts()
        if aborts is not None:
            branches, reason = aborts
            log.debug("%s: aborting branches %s (%s)", p.id, branches, reason)
            self.metrics.early_stops.labels(p.tts.early_stop).inc()
            self.metrics.branches_aborted.labels("early_stop").inc(len(branches))
            await streams.abort(branches)
        pruned = presenter.take_prunes()
        if pruned:
            log.debug("%s: pruning branches %s (low confidence)", p.id, pruned)
            self.metrics.branches_aborted.labels("confidence_prune").inc(len(pruned))
            self.metrics.pruned_tokens.inc(sum(presenter.branches[i].tokens for i in pruned))
            await streams.abort(pruned)
        events: list[OutputEvent] = []
        for iv in presenter.take_interventions():
            b = presenter.branches[iv.branch]
            prompt = p.prompt + b.generated() + iv.injected
            events += presenter.apply_intervention(iv)
            self.metrics.interventions.labels(iv.rule).inc()
            # A continuation holds the closed thinking block: a format grammar no longer fits.
            # The branch as a whole stays within max_tokens (an API key's cap included): the
            # answer after a cut gets at most what is left of it.
            left = max(1, p.params.max_tokens - b.tokens)
            params = p.params.model_copy(
                update={"seed": b.seed, "max_tokens": min(iv.max_tokens, left), "grammar": None}
            )
            await streams.continue_branch(iv.branch, prompt, params, worker=b.worker)
        return events

    async def _fill_usage(self, p: PreparedRequest, presenter: Presenter) -> None:
        """Aborted branches never reported usage; their prompt is the same as the others'."""
        known = presenter.known_prompt_tokens()
        if known == 0:
            with contextlib.suppress(TTSError):
                known = await p.pool.count_tokens(p.prompt)
        presenter.fill_prompt_tokens(known)

    def _loop_deadline(self, p: PreparedRequest) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + max(0.0, p.deadline - time.monotonic())

    async def _finish_record(
        self, p: PreparedRequest, presenter: Presenter, fields: dict[str, Any]
    ) -> None:
        if p.record is None:
            return
        p.start_record(self.store)  # ended before it started generating
        try:
            await p.record_written()
            await self.store.update_request(p.id, **fields)
            for b in presenter.branch_records():
                await self.store.update_branch(p.id, b.index, **b.model_dump(exclude={"index"}))
        except TTSError:
            log.warning("could not record the end of %s", p.id)


@dataclass
class _Phase:
    """The job and presenter running now; the last phase's presenter is recorded."""

    job: GenerationJob
    presenter: Presenter
