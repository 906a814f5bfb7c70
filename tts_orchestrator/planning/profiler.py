"""Profile a running worker: decode step time by concurrency, prefill rate, speculative acceptance.

Everything goes through :class:`~tts_orchestrator.backends.base.WorkerBackend` (streamed
completions and ``metrics()``), so a llama.cpp and a vLLM worker are profiled the same way.

Decode, at each concurrency ``B`` (1, 2, 4, ... up to the worker's slots): ``B`` streams of one
chat prompt start together, each generating exactly ``decode_tokens`` tokens (``ignore_eos``),
with the engine counters read before and after.

* Per-token time of a stream = (time of its last token - time of its first token) / (tokens
  after the first). The first token is excluded, so prompt processing is not in it; the median
  over the ``B`` streams is the level's per-token time ``t(B)``.
* Tokens per step ``a`` (from the counters, engine-agnostic): every decode step of a sequence
  yields the target's own token plus the draft tokens it accepted, so over a window with
  ``G`` generated tokens, ``R`` requests (each got its first token from prefill) and ``A``
  accepted draft tokens, ``steps = G - R - A`` and ``a = (G - R) / steps``; exactly 1 without
  speculation.
* Step time ``s(B) = a · t(B)``: one engine iteration including drafting and verification, as
  :class:`policies.profile.PoolProfile` defines it.

Prefill: one fresh prompt of about ``prefill_tokens`` tokens (a random nonce first, so the
prefix cache cannot serve it), one generated token; the rate is the engine's own
``prompt_n / prompt_ms`` when it reports timings (llama.cpp), else uncached prompt tokens over
the client's time to first token.

Live traffic (:func:`observation_from_counters`): between two metric snapshots of a busy worker
the same counters give an observation to fold into the stored profile.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from policies.profile import PoolProfile, SpeculativeMethod, StepTimePoint
from policies.roofline import batch_levels
from tts_orchestrator.backends.base import SamplingParams, WorkerBackend, WorkerMetrics
from tts_orchestrator.config import PoolConfig
from tts_orchestrator.exceptions import WorkerError

#: Decode probe: a math word problem, the traffic this service exists for (speculative
#: acceptance depends on the text, so it is measured on the kind of text branches write).
PROBE_QUESTION = (
    "A train leaves a station at 9:00 travelling at 60 km/h. A second train leaves the same "
    "station at 10:30 on the same track travelling at 90 km/h. At what time does the second "
    "train catch up with the first? Reason step by step, then give the final answer in "
    "\\boxed{}."
)

_FILLER = (
    "The committee reviewed the quarterly figures for each of the regional offices, compared "
    "them with the forecasts made in the spring, and wrote down every difference larger than "
    "five percent together with the reason the office gave for it. "
)

#: Engine counters of the time one sequence spends generating and its token count, summed
#: over sequences: (seconds counter, tokens counter). Reported next to the client's timing.
ENGINE_DECODE_TIME_COUNTERS: Mapping[str, tuple[str, str]] = {
    "llama_cpp": ("llamacpp:tokens_predicted_seconds_total", "llamacpp:tokens_predicted_total"),
    "vllm": ("vllm:inter_token_latency_seconds_sum", "vllm:inter_token_latency_seconds_count"),
}

#: Engine counters of decode iterations (one batch step counts once), for live observations.
ENGINE_DECODE_CALL_COUNTERS: Mapping[str, str] = {"llama_cpp": "llamacpp:n_decode_total"}


class ProfilerSettings(BaseModel):
    """How hard to probe: defaults keep one run on SmolLM2 well under two minutes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrencies: tuple[int, ...] | None = Field(
        default=None, description="Concurrencies to measure (None: 1, 2, 4, ... up to slots)."
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Slots (None: the pool's launch.n_parallel)."
    )
    decode_tokens: int = Field(default=64, ge=8, description="Tokens each probe stream generates.")
    prefill_tokens: int = Field(default=256, ge=16, description="Length of the prefill probe.")
    temperature: float = Field(
        default=0.7, ge=0.0, le=2.0, description="Sampling of the probes (branches sample)."
    )
    seed: int = 0
    warmup_tokens: int = Field(default=8, ge=1, description="A first short request, not timed.")

    def levels(self, slots: int) -> tuple[int, ...]:
        if self.concurrencies is not None:
            return tuple(sorted({c for c in self.concurrencies if 1 <= c <= slots}))
        return batch_levels(slots)


class StreamTiming(BaseModel):
    """Client-side timing of one probe stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_s: float = Field(..., ge=0)
    decode_s: float = Field(..., ge=0, description="First token to last token.")
    tokens: int = Field(..., ge=0, description="Generated tokens.")
    prompt_tokens: int = 0
    cached_prompt_tokens: int | None = None
    engine_timings: dict[str, float] | None = None

    @property
    def per_token_s(self) -> float | None:
        """Seconds per token after the first; None with fewer than two tokens."""
        return self.decode_s / (self.tokens - 1) if self.tokens > 1 else None


class CounterDelta(BaseModel):
    """Engine counters over one window (after - before)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generated_tokens: float = Field(..., ge=0)
    accepted_tokens: float = Field(default=0.0, ge=0)
    draft_tokens: float = Field(default=0.0, ge=0)
    drafts: float = Field(default=0.0, ge=0)
    requests: int = Field(default=0, ge=0, description="Requests that started in the window.")
    raw: dict[str, float] = Field(default_factory=dict, description="Every raw counter's delta.")

    @classmethod
    def between(cls, before: WorkerMetrics, after: WorkerMetrics, *, requests: int) -> CounterDelta:
        """Deltas of two snapshots; a counter that went backwards (engine restart) raises."""
        generated = after.generation_tokens_total - before.generation_tokens_total
        accepted = after.spec_accepted_tokens_total - before.spec_accepted_tokens_total
        draft = after.spec_draft_tokens_total - before.spec_draft_tokens_total
        drafts = after.spec_drafts_total - before.spec_drafts_total
        if min(generated, accepted, draft, drafts) < 0:
            raise WorkerError("engine counters went backwards: the worker restarted mid-profile")
        raw = {k: v - before.raw.get(k, 0.0) for k, v in after.raw.items()}
        return cls(
            generated_tokens=generated,
            accepted_tokens=accepted,
            draft_tokens=draft,
            drafts=drafts,
            requests=requests,
            raw=raw,
        )

    @property
    def decode_tokens(self) -> float:
        """Tokens produced by decode steps (each request's first token came from prefill)."""
        return max(self.generated_tokens - self.requests, 0.0)

    @property
    def decode_steps(self) -> float:
        """Decode iterations summed over sequences (``decode_tokens - accepted``)."""
        return max(self.decode_tokens - self.accepted_tokens, 0.0)

    @property
    def tokens_per_step(self) -> float:
        """Mean tokens a sequence gains per step: 1 + accepted draft tokens per step."""
        if self.accepted_tokens <= 0 or self.decode_steps <= 0:
            return 1.0
        return self.decode_tokens / self.decode_steps

    @property
    def draft_acceptance_rate(self) -> float | None:
        """Share of proposed draft tokens the target accepted (None without drafts)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens > 0 else None

    def engine_per_token_s(self, engine: str) -> float | None:
        """The engine's own seconds per generated token of one sequence, when it counts them."""
        names = ENGINE_DECODE_TIME_COUNTERS.get(engine)
        if names is None:
            return None
        seconds, tokens = (self.raw.get(n, 0.0) for n in names)
        return seconds / tokens if seconds > 0 and tokens > 0 else None


class ConcurrencySample(BaseModel):
    """One measured concurrency level."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(..., ge=1)
    wall_s: float = Field(..., ge=0)
    streams: tuple[StreamTiming, ...] = Field(..., min_length=1)
    counters: CounterDelta
    engine_per_token_s: float | None = Field(
        default=None, description="Cross-check from the engine's own counters."
    )

    @property
    def per_token_s(self) -> float:
        values = [t for s in self.streams if (t := s.per_token_s) is not None]
        if not values:
            raise WorkerError(f"no stream produced two tokens at concurrency {self.concurrency}")
        return statistics.median(values)

    @property
    def tokens_per_step(self) -> float:
        return self.counters.tokens_per_step

    @property
    def step_time_s(self) -> float:
        return self.per_token_s * self.tokens_per_step

    @property
    def tokens_per_s(self) -> float:
        """Per-sequence decode rate at this concurrency."""
        return 1.0 / self.per_token_s


class PrefillSample(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = Field(..., ge=1, description="Tokens actually processed (not cached).")
    seconds: float = Field(..., gt=0)
    source: str = Field(..., description="'engine' (engine timings) or 'client' (TTFT).")

    @property
    def tokens_per_s(self) -> float:
        return self.prompt_tokens / self.seconds


class ProfileRun(BaseModel):
    """A profile and the measurements it was built from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: PoolProfile
    samples: tuple[ConcurrencySample, ...]
    prefill: PrefillSample
    duration_s: float
    warnings: tuple[str, ...] = ()


def machine_description(threads: int | None = None) -> str:
    """Host name, CPU count and engine threads: where a profile is valid."""
    parts = [socket.gethostname(), f"{os.cpu_count()} cpus"]
    if threads is not None:
        parts.append(f"{threads} threads")
    return ", ".join(parts)


def speculative_setting(pool: PoolConfig) -> tuple[SpeculativeMethod, int]:
    """The pool's speculative method and depth (llama.cpp's default depth when unset)."""
    method = SpeculativeMethod(pool.speculative.method)
    depth = pool.speculative.num_speculative_tokens
    if method is not SpeculativeMethod.NONE and depth == 0:
        depth = _LLAMA_CPP_DEFAULT_DRAFT_MAX
    return method, depth


_LLAMA_CPP_DEFAULT_DRAFT_MAX = 3  # xllamacpp's `speculative.draft.n_max` when not given


def build_profile(
    pool: PoolConfig,
    *,
    samples: Sequence[ConcurrencySample],
    prefill: PrefillSample,
    max_concurrency: int,
    machine: str,
    measured_at: datetime | None = None,
    prefix_cache_shared: bool = True,
) -> PoolProfile:
    """The :class:`PoolProfile` of measured samples (pure: no I/O)."""
    if not samples:
        raise ValueError("need at least one concurrency sample")
    method, depth = speculative_setting(pool)
    if method is SpeculativeMethod.NONE:
        accepted = 1.0
    else:
        # Weighted by decode steps: every level's steps count once.
        steps = sum(s.counters.decode_steps for s in samples)
        tokens = sum(s.counters.decode_tokens for s in samples)
        accepted = min(max(tokens / steps if steps > 0 else 1.0, 1.0), float(depth + 1))
    points = tuple(
        StepTimePoint(concurrency=s.concurrency, step_time_s=s.per_token_s * accepted)
        for s in samples
    )
    return PoolProfile(
        pool=pool.name,
        engine=pool.engine,
        model=pool.model,
        machine=machine,
        measured_at=measured_at or datetime.now(UTC),
        speculative_method=method,
        speculative_depth=depth if method is not SpeculativeMethod.NONE else 0,
        step_times=points,
        prefill_tokens_per_s=prefill.tokens_per_s,
        accepted_tokens_per_step=accepted,
        max_concurrency=max_concurrency,
        prefix_cache_shared=prefix_cache_shared,
    )


class WorkerProfiler:
    """Measures one worker of one pool through its backend."""

    def __init__(
        self,
        backend: WorkerBackend,
        *,
        pool: PoolConfig,
        settings: ProfilerSettings | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.backend = backend
        self._clock = clock
        self.pool = pool
        self.settings = settings or ProfilerSettings()
        slots = self.settings.max_concurrency or (pool.launch.n_parallel if pool.launch else None)
        if slots is None:
            raise ValueError(f"pool {pool.name} has no launch spec: give max_concurrency")
        self.slots = slots

    async def run(self) -> ProfileRun:
        """Warm up, measure prefill and every concurrency level, build the profile."""
        start = self._clock()
        warnings: list[str] = []
        before = await self.backend.metrics()
        if before.requests_running or before.requests_waiting:
            warnings.append(
                f"worker busy when profiling started ({before.requests_running:g} running, "
                f"{before.requests_waiting:g} waiting): step times include that load"
            )
        prompt = await self.backend.apply_chat_template(
            [{"role": "user", "content": PROBE_QUESTION}]
        )
        await self._stream(prompt, self._params(self.settings.warmup_tokens, 0))
        prefill = await self.measure_prefill()
        shared = await self.measure_prefix_sharing() if self.slots > 1 else True
        samples = [await self.measure_decode(prompt, b) for b in self.settings.levels(self.slots)]
        warnings += _sample_warnings(samples)
        threads = self.pool.launch.threads if self.pool.launch else None
        profile = build_profile(
            self.pool,
            samples=samples,
            prefill=prefill,
            max_concurrency=self.slots,
            machine=machine_description(threads),
            prefix_cache_shared=shared,
        )
        return ProfileRun(
            profile=profile,
            samples=tuple(samples),
            prefill=prefill,
            duration_s=self._clock() - start,
            warnings=tuple(warnings),
        )

    def _params(self, max_tokens: int, seed: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.settings.temperature,
            seed=self.settings.seed + seed,
            ignore_eos=True,
        )

    async def measure_decode(self, prompt: str, concurrency: int) -> ConcurrencySample:
        """``concurrency`` streams of ``decode_tokens`` tokens each, started together."""
        before = await self.backend.metrics()
        start = self._clock()
        params = [self._params(self.settings.decode_tokens, 1000 + i) for i in range(concurrency)]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._stream(prompt, p)) for p in params]
        wall = self._clock() - start
        after = await self.backend.metrics()
        counters = CounterDelta.between(before, after, requests=concurrency)
        return ConcurrencySample(
            concurrency=concurrency,
            wall_s=wall,
            streams=tuple(t.result() for t in tasks),
            counters=counters,
            engine_per_token_s=counters.engine_per_token_s(self.pool.engine),
        )

    async def fresh_prompt(self, tokens: int) -> str:
        """A prompt of about ``tokens`` tokens that no cache has seen."""
        head = f"Record {uuid.uuid4().hex}. "
        per_filler = max(await self.backend.count_tokens(_FILLER), 1)
        repeats = max(1, round((tokens - await self.backend.count_tokens(head)) / per_filler))
        return head + _FILLER * repeats + "\nSummarise the record in one word:"

    async def measure_prefill(self) -> PrefillSample:
        prompt = await self.fresh_prompt(self.settings.prefill_tokens)
        timing = await self._stream(prompt, self._params(1, 1))
        engine = timing.engine_timings or {}
        if engine.get("prompt_n", 0) > 0 and engine.get("prompt_ms", 0) > 0:
            return PrefillSample(
                prompt_tokens=int(engine["prompt_n"]),
                seconds=engine["prompt_ms"] / 1000.0,
                source="engine",
            )
        uncached = timing.prompt_tokens - (timing.cached_prompt_tokens or 0)
        if uncached <= 0 or timing.ttft_s <= 0:
            raise WorkerError(f"worker {self.backend.name} reported no prompt tokens for prefill")
        return PrefillSample(prompt_tokens=uncached, seconds=timing.ttft_s, source="client")

    async def measure_prefix_sharing(self, tokens: int = 64) -> bool:
        """Do two branches of one new prompt, started together, prefill it only once?

        Each generates a few tokens, so the first is still running when the second arrives
        (a second request arriving after the first finished would find its cache).
        """
        prompt = await self.fresh_prompt(tokens)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._stream(prompt, self._params(8, i))) for i in (2, 3)]
        timings = [t.result() for t in tasks]
        processed = sum(_uncached_prompt_tokens(t) for t in timings)
        return processed < 1.5 * max(t.prompt_tokens for t in timings)

    async def _stream(self, prompt: str, params: SamplingParams) -> StreamTiming:
        start = self._clock()
        first = last = None
        tokens = 0
        prompt_tokens, cached, timings = 0, None, None
        request_id = f"profile-{uuid.uuid4().hex[:12]}"
        async for chunk in self.backend.stream_completion(prompt, params, request_id=request_id):
            now = self._clock()
            if chunk.n_tokens:
                tokens += chunk.n_tokens
                first = now if first is None else first
                last = now
            if chunk.usage is not None:
                prompt_tokens = chunk.usage.prompt_tokens
                cached = chunk.usage.cached_prompt_tokens
                tokens = max(tokens, chunk.usage.completion_tokens)
            if chunk.timings is not None:
                timings = chunk.timings
        if first is None or last is None:
            raise WorkerError(f"worker {self.backend.name} streamed no tokens")
        return StreamTiming(
            ttft_s=first - start,
            decode_s=last - first,
            tokens=tokens,
            prompt_tokens=prompt_tokens,
            cached_prompt_tokens=cached,
            engine_timings=timings,
        )


def _uncached_prompt_tokens(timing: StreamTiming) -> int:
    engine = timing.engine_timings or {}
    if "prompt_n" in engine:
        return int(engine["prompt_n"])
    return timing.prompt_tokens - (timing.cached_prompt_tokens or 0)


def _sample_warnings(samples: Sequence[ConcurrencySample]) -> list[str]:
    out = []
    for s in samples:
        short = [t.tokens for t in s.streams if t.tokens < 2]
        if short:
            out.append(f"B={s.concurrency}: {len(short)} stream(s) produced < 2 tokens")
        if s.engine_per_token_s is not None:
            ratio = s.per_token_s / s.engine_per_token_s
            if not 0.7 <= ratio <= 1.4:
                out.append(
                    f"B={s.concurrency}: client per-token time {s.per_token_s * 1e3:.1f} ms is "
                    f"x{ratio:.2f} the engine's {s.engine_per_token_s * 1e3:.1f} ms"
                )
    return out


class LiveObservation(BaseModel):
    """What a window of live traffic says about a pool (input of ``PoolProfile.observe``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: int = Field(..., ge=1)
    step_time_s: float = Field(..., gt=0)
    accepted_tokens_per_step: float | None = Field(default=None, ge=1.0)


def observation_from_counters(
    before: WorkerMetrics,
    after: WorkerMetrics,
    *,
    wall_s: float,
    engine: str,
    min_tokens: int = 16,
) -> LiveObservation | None:
    """A live observation from two snapshots of a worker that was busy in between.

    None when the window says nothing reliable: idle at either end (idle time would inflate
    the step time), fewer than ``min_tokens`` generated, or counters that went backwards.
    Step time, best source first: the engine's own decode timing (llama.cpp: generation seconds
    / tokens of the requests that finished in the window, times ``a``), which leaves out prompt
    processing and the gaps between requests; else ``wall / decode calls`` where the engine
    counts its batched calls; else ``wall · concurrency · a / decode tokens``. Concurrency is
    the mean of the running requests at both ends.
    """
    if wall_s <= 0 or before.requests_running < 1 or after.requests_running < 1:
        return None
    try:
        delta = CounterDelta.between(before, after, requests=0)
    except WorkerError:
        return None
    if delta.generated_tokens < min_tokens:
        return None
    concurrency = max(1, round((before.requests_running + after.requests_running) / 2))
    a = delta.tokens_per_step
    calls_name = ENGINE_DECODE_CALL_COUNTERS.get(engine)
    calls = delta.raw.get(calls_name, 0.0) if calls_name else 0.0
    per_token = delta.engine_per_token_s(engine)
    if per_token is not None:
        step = per_token * a
    elif calls > 0:
        step = wall_s / calls
    else:
        step = wall_s * concurrency * a / delta.generated_tokens
    speculated = delta.accepted_tokens > 0 or delta.drafts > 0
    return LiveObservation(
        concurrency=concurrency,
        step_time_s=step,
        accepted_tokens_per_step=a if speculated else None,
    )
