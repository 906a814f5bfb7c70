"""Profiler math (counter deltas -> acceptance and step time), the profiler against a fake
engine on a virtual clock, live observations, and the file profile store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from policies.profile import PoolProfile, SpeculativeMethod, StepTimePoint
from tts_orchestrator.backends.base import (
    CompletionChunk,
    SamplingParams,
    Usage,
    WorkerBackend,
    WorkerMetrics,
)
from tts_orchestrator.config import PoolConfig
from tts_orchestrator.config.planning import PlannerSettings
from tts_orchestrator.exceptions import WorkerError
from tts_orchestrator.planning.live import LivePlanner, LivePool, LiveProfileUpdater
from tts_orchestrator.planning.planner import PlanRequest
from tts_orchestrator.planning.profiler import (
    ConcurrencySample,
    CounterDelta,
    PrefillSample,
    ProfilerSettings,
    StreamTiming,
    WorkerProfiler,
    build_profile,
    observation_from_counters,
)
from tts_orchestrator.planning.store import FileProfileStore


def _metrics(
    generated: float = 0,
    accepted: float = 0,
    drafts: float = 0,
    *,
    running: float = 0,
    raw: dict[str, float] | None = None,
) -> WorkerMetrics:
    return WorkerMetrics(
        requests_running=running,
        generation_tokens_total=generated,
        spec_accepted_tokens_total=accepted,
        spec_drafts_total=drafts,
        spec_draft_tokens_total=drafts * 4,
        raw=raw or {},
    )


def _pool(method: str = "none", depth: int = 0, slots: int = 4) -> PoolConfig:
    speculative: dict[str, object] = {"method": method, "num_speculative_tokens": depth}
    if method == "draft":
        speculative["draft_model"] = "draft.gguf"
    return PoolConfig.model_validate(
        {
            "name": f"pool-{method}",
            "model": "m",
            "launch": {"model_path": "m.gguf", "n_parallel": slots, "threads": 2},
            "speculative": speculative,
        }
    )


# -- counter deltas --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "requests", "tokens_per_step", "steps"),
    [
        # 4 streams x 64 tokens, no speculation: every decode token is one step
        pytest.param(_metrics(256), 4, 1.0, 252, id="plain-4-streams"),
        # measured on the draft pool: 64 tokens, 47 accepted, 16 verification steps
        pytest.param(_metrics(64, 47, 16), 1, 63 / 16, 16, id="draft-real-counters"),
        # nothing accepted although the pool speculates: 1 token per step
        pytest.param(_metrics(64, 0, 20), 1, 1.0, 63, id="draft-none-accepted"),
    ],
)
def test_counter_delta_tokens_per_step(
    after: WorkerMetrics, requests: int, tokens_per_step: float, steps: float
) -> None:
    delta = CounterDelta.between(_metrics(), after, requests=requests)
    assert delta.tokens_per_step == pytest.approx(tokens_per_step)
    assert delta.decode_steps == pytest.approx(steps)


def test_counter_delta_subtracts_the_before_snapshot() -> None:
    before = _metrics(1000, 300, 100, raw={"x": 5.0})
    after = _metrics(1064, 347, 116, raw={"x": 7.5})
    delta = CounterDelta.between(before, after, requests=1)
    assert (delta.generated_tokens, delta.accepted_tokens, delta.drafts) == (64, 47, 16)
    assert delta.raw == {"x": 2.5}
    assert delta.draft_acceptance_rate == pytest.approx(47 / 64)


def test_counters_going_backwards_mean_a_restart() -> None:
    with pytest.raises(WorkerError, match="restarted"):
        CounterDelta.between(_metrics(500), _metrics(10), requests=1)


@pytest.mark.parametrize(
    ("engine", "raw", "expected"),
    [
        pytest.param(
            "llama_cpp",
            {"llamacpp:tokens_predicted_seconds_total": 4.0, "llamacpp:tokens_predicted_total": 64},
            4.0 / 64,
            id="llama-cpp",
        ),
        pytest.param(
            "vllm",
            {
                "vllm:inter_token_latency_seconds_sum": 2.0,
                "vllm:inter_token_latency_seconds_count": 100,
            },
            0.02,
            id="vllm",
        ),
        pytest.param("replay", {"whatever": 1.0}, None, id="unknown-engine"),
        pytest.param("llama_cpp", {}, None, id="no-counters"),
    ],
)
def test_engine_per_token_time(engine: str, raw: dict[str, float], expected: float | None) -> None:
    delta = CounterDelta.between(_metrics(), _metrics(64, raw=raw), requests=1)
    assert delta.engine_per_token_s(engine) == (
        pytest.approx(expected) if expected is not None else None
    )


# -- samples and profiles --------------------------------------------------------------------


def _sample(b: int, per_token_s: float, counters: CounterDelta) -> ConcurrencySample:
    streams = tuple(
        StreamTiming(ttft_s=0.1, decode_s=per_token_s * 63 * (1 + 0.01 * i), tokens=64)
        for i in range(b)
    )
    return ConcurrencySample(concurrency=b, wall_s=1.0, streams=streams, counters=counters)


def test_sample_uses_the_median_stream_and_counter_acceptance() -> None:
    counters = CounterDelta(generated_tokens=192, accepted_tokens=126, requests=3)
    sample = _sample(3, 0.1, counters)
    assert sample.per_token_s == pytest.approx(0.101)  # the middle of 0.100, 0.101, 0.102
    assert sample.tokens_per_step == pytest.approx(189 / 63)
    assert sample.step_time_s == pytest.approx(0.101 * 3)


@pytest.mark.parametrize(
    ("method", "depth", "accepted", "expected_a", "expected_depth"),
    [
        pytest.param("none", 0, 0.0, 1.0, 0, id="plain"),
        pytest.param("draft", 4, 126.0, 189 / 63, 4, id="draft-k4"),
        # more accepted than k allows (counter noise): clipped to k + 1
        pytest.param("draft", 1, 150.0, 2.0, 1, id="clipped-to-depth"),
        # depth unset in the config: llama.cpp's default draft length
        pytest.param("draft", 0, 100.0, 189 / 89, 3, id="default-depth"),
    ],
)
def test_build_profile(
    method: str, depth: int, accepted: float, expected_a: float, expected_depth: int
) -> None:
    counters = CounterDelta(generated_tokens=192, accepted_tokens=accepted, requests=3)
    samples = [_sample(1, 0.05, counters), _sample(2, 0.08, counters)]
    profile = build_profile(
        _pool(method, depth),
        samples=samples,
        prefill=PrefillSample(prompt_tokens=256, seconds=2.0, source="engine"),
        max_concurrency=4,
        machine="host, 2 cpus",
        prefix_cache_shared=False,
    )
    assert profile.speculative_method is SpeculativeMethod(method)
    assert profile.speculative_depth == expected_depth
    assert profile.accepted_tokens_per_step == pytest.approx(expected_a)
    # decode rate per sequence is exactly what the client measured, whatever a is
    assert profile.decode_tokens_per_s(1) == pytest.approx(1 / samples[0].per_token_s)
    assert profile.decode_tokens_per_s(2) == pytest.approx(1 / samples[1].per_token_s)
    assert profile.prefill_tokens_per_s == 128.0
    assert not profile.prefix_cache_shared


@pytest.mark.parametrize(
    ("concurrencies", "slots", "levels"),
    [
        pytest.param(None, 4, (1, 2, 4), id="powers-of-two"),
        pytest.param(None, 6, (1, 2, 4, 6), id="slots-not-a-power"),
        pytest.param(None, 1, (1,), id="one-slot"),
        pytest.param((4, 1, 16, 2, 2), 8, (1, 2, 4), id="explicit-filtered-sorted"),
    ],
)
def test_levels(concurrencies: tuple[int, ...] | None, slots: int, levels: tuple[int, ...]) -> None:
    assert ProfilerSettings(concurrencies=concurrencies).levels(slots) == levels


# -- the profiler against a fake engine on a virtual clock ----------------------------------


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeEngine(WorkerBackend):
    """Streams tokens on a virtual clock: all active streams step together, each step takes
    ``step_time(active)`` and yields ``tokens_per_step`` tokens per stream; counters like
    llama.cpp's. Prompts are prefilled at ``prefill_tps``; ``share_prefix`` makes concurrent
    identical prompts prefill once."""

    name = "fake"

    def __init__(
        self,
        clock: VirtualClock,
        *,
        step_time: Callable[[int], float],
        tokens_per_step: int = 1,
        prefill_tps: float = 500.0,
        share_prefix: bool = False,
        busy: int = 0,
    ) -> None:
        self.clock = clock
        self.step_time = step_time
        self.tokens_per_step = tokens_per_step
        self.prefill_tps = prefill_tps
        self.share_prefix = share_prefix
        self.busy = busy
        self.active = 0
        self.generated = 0.0
        self.accepted = 0.0
        self.drafts = 0.0
        self.params_seen: list[SamplingParams] = []
        self._prefilled: set[str] = set()

    async def stream_completion(
        self, prompt: str, params: SamplingParams, *, request_id: str
    ) -> AsyncIterator[CompletionChunk]:
        self.params_seen.append(params)
        self.active += 1
        start = self.clock.now
        await asyncio.sleep(0)  # let every stream of the level register first
        prompt_tokens = len(prompt.split())
        processed = 0 if self.share_prefix and prompt in self._prefilled else prompt_tokens
        self._prefilled.add(prompt)
        t = start + processed / self.prefill_tps
        produced = 1
        self.clock.now = max(self.clock.now, t)
        yield CompletionChunk(text="x", n_tokens=1)
        while produced < params.max_tokens:
            await asyncio.sleep(0)  # streams step in lockstep, like one batch
            step = self.step_time(self.active)
            gained = min(self.tokens_per_step, params.max_tokens - produced)
            for _ in range(gained):
                t += step / gained
                self.clock.now = max(self.clock.now, t)
                produced += 1
                yield CompletionChunk(text="x", n_tokens=1)
            self.accepted += gained - 1
            self.drafts += 1 if self.tokens_per_step > 1 else 0
        self.generated += produced
        self.active -= 1
        yield CompletionChunk(
            finish_reason="length",
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=produced),
            timings={"prompt_n": processed, "prompt_ms": 1000 * processed / self.prefill_tps},
        )

    async def abort(self, request_id: str) -> None:
        return None

    async def health(self) -> bool:
        return True

    async def metrics(self) -> WorkerMetrics:
        return _metrics(self.generated, self.accepted, self.drafts, running=self.busy)

    async def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    async def apply_chat_template(
        self,
        messages: Sequence[dict[str, str]],
        *,
        template_kwargs: dict[str, object] | None = None,
    ) -> str:
        return " ".join(m["content"] for m in messages)


def _step_time(b: int) -> float:
    return 0.02 + 0.005 * (b - 1)


@pytest.mark.parametrize(
    ("method", "tokens_per_step"),
    [pytest.param("none", 1, id="plain"), pytest.param("draft", 3, id="draft-3-per-step")],
)
async def test_profiler_recovers_the_fake_engines_numbers(
    method: str, tokens_per_step: int
) -> None:
    clock = VirtualClock()
    engine = FakeEngine(clock, step_time=_step_time, tokens_per_step=tokens_per_step)
    settings = ProfilerSettings(decode_tokens=61, prefill_tokens=200)
    run = await WorkerProfiler(
        engine, pool=_pool(method, 4 if method != "none" else 0), settings=settings, clock=clock
    ).run()
    profile = run.profile
    assert [p.concurrency for p in profile.step_times] == [1, 2, 4]
    for point in profile.step_times:
        assert point.step_time_s == pytest.approx(_step_time(point.concurrency), rel=1e-6)
    assert profile.accepted_tokens_per_step == pytest.approx(tokens_per_step)
    assert profile.prefill_tokens_per_s == pytest.approx(500.0)
    assert profile.max_concurrency == 4
    assert not profile.prefix_cache_shared
    assert run.warnings == ()
    assert all(p.ignore_eos for p in engine.params_seen), "lengths must be controlled"
    assert {p.max_tokens for p in engine.params_seen} >= {61}


async def test_profiler_detects_a_shared_prefix_and_a_busy_worker() -> None:
    clock = VirtualClock()
    engine = FakeEngine(clock, step_time=_step_time, share_prefix=True, busy=2)
    settings = ProfilerSettings(decode_tokens=16, concurrencies=(1,))
    run = await WorkerProfiler(engine, pool=_pool(), settings=settings, clock=clock).run()
    assert run.profile.prefix_cache_shared
    assert any("busy" in w for w in run.warnings)


# -- live observations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "engine", "expected"),
    [
        pytest.param(
            _metrics(0, running=0), _metrics(100, running=2), "llama_cpp", None, id="idle-start"
        ),
        pytest.param(_metrics(0, running=2), _metrics(8, running=2), "vllm", None, id="too-few"),
        pytest.param(
            _metrics(500, running=2), _metrics(100, running=2), "vllm", None, id="restarted"
        ),
        # llama.cpp counts its batched decode calls: 2 s / 40 calls
        pytest.param(
            _metrics(0, running=2, raw={"llamacpp:n_decode_total": 10}),
            _metrics(80, running=2, raw={"llamacpp:n_decode_total": 50}),
            "llama_cpp",
            (2, 0.05, None),
            id="llama-cpp-decode-calls",
        ),
        # llama.cpp's own decode timing wins over the wall clock (which holds prefill and
        # gaps): 90 tokens finished in 6.3 request-seconds -> 70 ms per step
        pytest.param(
            _metrics(
                0,
                running=2,
                raw={
                    "llamacpp:n_decode_total": 10,
                    "llamacpp:tokens_predicted_seconds_total": 1.0,
                    "llamacpp:tokens_predicted_total": 10,
                },
            ),
            _metrics(
                80,
                running=2,
                raw={
                    "llamacpp:n_decode_total": 50,
                    "llamacpp:tokens_predicted_seconds_total": 7.3,
                    "llamacpp:tokens_predicted_total": 100,
                },
            ),
            "llama_cpp",
            (2, 0.07, None),
            id="llama-cpp-engine-timed",
        ),
        # generic: 2 sequences x 2 tokens/step, 200 tokens in 2 s -> 50 steps -> 40 ms
        pytest.param(
            _metrics(0, 0, 0, running=2),
            _metrics(200, 100, 50, running=2),
            "vllm",
            (2, 0.04, 2.0),
            id="generic-speculative",
        ),
    ],
)
def test_observation_from_counters(
    before: WorkerMetrics,
    after: WorkerMetrics,
    engine: str,
    expected: tuple[int, float, float | None] | None,
) -> None:
    obs = observation_from_counters(before, after, wall_s=2.0, engine=engine)
    if expected is None:
        assert obs is None
        return
    assert obs is not None
    assert (obs.concurrency, obs.accepted_tokens_per_step) == (expected[0], expected[2])
    assert obs.step_time_s == pytest.approx(expected[1])


def _profile(pool: str = "plain", step: float = 0.1, **kw: object) -> PoolProfile:
    return PoolProfile.model_validate(
        {
            "pool": pool,
            "engine": "llama_cpp",
            "model": "m",
            "step_times": (StepTimePoint(concurrency=1, step_time_s=step),),
            "prefill_tokens_per_s": 100.0,
            "max_concurrency": 4,
            **kw,
        }
    )


async def test_live_updater_folds_busy_windows_into_the_store(tmp_path: Path) -> None:
    store = FileProfileStore(tmp_path / "profiles.json")
    await store.put(_profile(step=0.1))
    snapshots = iter(
        [
            [_metrics(0, running=1)],
            [_metrics(40, running=1)],  # 40 tokens in 2 s at concurrency 1: 50 ms per step
        ]
    )
    clock = VirtualClock()

    async def metrics() -> list[WorkerMetrics]:
        clock.now += 2.0
        return next(snapshots)

    updater = LiveProfileUpdater(
        store, pool="plain", engine="vllm", metrics=metrics, alpha=0.5, clock=clock
    )
    assert await updater.poll_once() == []  # the first snapshot only starts the window
    [obs] = await updater.poll_once()
    assert obs.step_time_s == pytest.approx(0.05)
    stored = await store.get("plain")
    assert stored is not None
    assert stored.observations == 1
    assert stored.step_time_s(1) == pytest.approx(0.075)  # halfway from 0.1 to 0.05


async def test_live_planner_seeds_from_the_file_and_follows_the_store(tmp_path: Path) -> None:
    profiles_file = tmp_path / "profiles.json"
    FileProfileStore(profiles_file).merge(_profile("plain", 0.1))
    FileProfileStore(profiles_file).merge(_profile("other-model", 0.1, model="x"))
    store = FileProfileStore(tmp_path / "shared.json")  # stands in for Redis
    settings = PlannerSettings(profiles_path=str(profiles_file), live_update_interval_s=60)

    async def idle() -> list[WorkerMetrics]:
        return [_metrics()]

    live = LivePlanner(settings, store=store)
    assert not live.planner.can_plan("m")  # usable before start: plans nothing
    await live.start([LivePool(name="plain", engine="llama_cpp", metrics=idle)])
    try:
        assert (await store.load()).pools == ["plain"]  # only the served pools are seeded
        assert live.planner.can_plan("m")
        assert await live.seed() == 0  # the store already has it: live numbers win
        await store.put(_profile("plain", 0.5))
        planner = await live.refresh()
        assert planner.profiles.get("plain").step_time_s(1) == pytest.approx(0.5)
        plan = planner.plan(PlanRequest(model="m", prompt_tokens=10, latency_budget_s=1e4))
        assert plan.pool == "plain"
    finally:
        await live.aclose()
    assert live._tasks == []


# -- file profile store ----------------------------------------------------------------------


async def test_file_store_round_trip_and_merge(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "profiles.json"
    store = FileProfileStore(path)
    assert await store.get("plain") is None
    assert (await store.load()).profiles == ()
    await store.put(_profile("plain", 0.1))
    await store.put(_profile("draft", 0.2, speculative_method="draft", speculative_depth=4))
    await store.put(_profile("plain", 0.3))  # replaces, keeps the other pool
    loaded = await store.load()
    assert sorted(loaded.pools) == ["draft", "plain"]
    assert loaded.get("plain").step_time_s(1) == pytest.approx(0.3)
    assert (await store.load(["draft", "missing"])).pools == ["draft"]
    assert json.loads(path.read_text())["profiles"]  # plain JSON, readable by `plan`
    assert [p.name for p in path.parent.iterdir()] == ["profiles.json"]  # no temp file left


async def test_file_store_observe(tmp_path: Path) -> None:
    store = FileProfileStore(tmp_path / "p.json")
    assert await store.observe("plain", concurrency=1, step_time_s=0.2) is None
    await store.put(_profile("plain", 0.1))
    updates = [store.observe("plain", concurrency=1, step_time_s=0.2, alpha=0.5) for _ in range(4)]
    await asyncio.gather(*updates)
    stored = await store.get("plain")
    assert stored is not None
    assert stored.observations == 4
    assert stored.step_time_s(1) == pytest.approx(0.2 - 0.1 / 16)
