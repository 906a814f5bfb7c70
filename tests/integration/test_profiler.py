"""The profiler on a real llama.cpp worker (SmolLM2, plain and self-drafting) and the profile
store on a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from benchmarks.service import cpu_pool
from policies.profile import PoolProfile, SpeculativeMethod, StepTimePoint
from tts_orchestrator.config import Settings
from tts_orchestrator.planning.cli import profile_pool
from tts_orchestrator.planning.profiler import ProfilerSettings
from tts_orchestrator.planning.store import FileProfileStore, RedisProfileStore
from tts_orchestrator.state.embedded import EmbeddedRedis
from tts_orchestrator.state.schema import KeySchema

pytestmark = pytest.mark.integration

QUICK = ProfilerSettings(concurrencies=(1, 2), decode_tokens=32, prefill_tokens=128)


def _settings(**pool: object) -> Settings:
    return Settings.model_validate({"pools": [{**cpu_pool("smol", n_parallel=2), **pool}]})


async def test_profile_the_real_smollm2_worker(tmp_path: Path) -> None:
    run = await profile_pool(_settings(), "smol", QUICK)
    profile = run.profile
    assert (profile.pool, profile.engine, profile.model) == (
        "smol",
        "llama_cpp",
        "smollm2-135m-instruct",
    )
    assert "cpus" in profile.machine
    assert "2 threads" in profile.machine
    assert [p.concurrency for p in profile.step_times] == [1, 2]
    assert profile.accepted_tokens_per_step == 1.0
    assert profile.max_concurrency == 2
    # llama.cpp slots keep separate caches: simultaneous branches each prefill the prompt
    assert not profile.prefix_cache_shared
    # A 135M model on two cores: milliseconds per step, not microseconds or seconds.
    for point in profile.step_times:
        assert 1e-3 < point.step_time_s < 1.0
    assert 10 < profile.prefill_tokens_per_s < 100_000
    assert run.prefill.source == "engine"
    for sample in run.samples:
        assert all(s.tokens == QUICK.decode_tokens for s in sample.streams), "ignore_eos"
        assert sample.counters.generated_tokens == QUICK.decode_tokens * sample.concurrency
        # the client's timing agrees with llama.cpp's own counters
        assert sample.engine_per_token_s is not None
        assert 0.5 < sample.per_token_s / sample.engine_per_token_s < 2.0
    assert run.duration_s < 120
    store = FileProfileStore(tmp_path / "profiles.json")
    store.merge(profile)
    assert store.read().get("smol") == profile


async def test_profile_a_self_drafting_worker_counts_accepted_tokens() -> None:
    """SmolLM2 drafting for itself: the same model proposes, so most drafts are accepted."""
    settings = _settings(
        speculative={
            "method": "draft",
            "draft_model": "smollm2-135m-instruct",
            "num_speculative_tokens": 3,
        }
    )
    run = await profile_pool(settings, "smol", QUICK.model_copy(update={"concurrencies": (1,)}))
    profile = run.profile
    assert profile.speculative_method is SpeculativeMethod.DRAFT
    assert profile.speculative_depth == 3
    [sample] = run.samples
    assert sample.counters.drafts > 0
    assert sample.counters.accepted_tokens > 0
    assert 1.5 < profile.accepted_tokens_per_step <= 4.0


# -- the Redis profile store -----------------------------------------------------------------


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    async with EmbeddedRedis() as redis:
        yield redis.url


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisProfileStore]:
    store = RedisProfileStore.from_url(redis_url)
    try:
        yield store
    finally:
        await store.aclose()


def _profile(pool: str, step: float = 0.1) -> PoolProfile:
    return PoolProfile(
        pool=pool,
        engine="llama_cpp",
        model="m",
        step_times=(StepTimePoint(concurrency=1, step_time_s=step),),
        prefill_tokens_per_s=100.0,
        max_concurrency=4,
    )


async def test_redis_store_round_trip(redis_store: RedisProfileStore) -> None:
    assert await redis_store.get("plain") is None
    assert (await redis_store.load()).profiles == ()
    plain = _profile("plain", 0.1)
    await redis_store.put(plain)
    await redis_store.put(_profile("draft", 0.2))
    assert await redis_store.get("plain") == plain
    assert (await redis_store.load()).pools == ["draft", "plain"]
    assert (await redis_store.load(["plain", "missing"])).pools == ["plain"]
    key = KeySchema().live_profile("plain")
    assert redis_store.key("plain") == key == "tts:profiles:plain"
    ttl = await redis_store.ttl_s("plain")
    assert ttl is not None
    assert 0 < ttl <= 7 * 86400
    assert await redis_store.ttl_s("missing") is None


async def test_redis_observe_loses_no_concurrent_update(
    redis_store: RedisProfileStore, redis_url: str
) -> None:
    """Two replicas (two stores, two connections) fold observations into one profile."""
    other_replica = RedisProfileStore.from_url(redis_url)
    assert await redis_store.observe("plain", concurrency=1, step_time_s=0.2) is None
    await redis_store.put(_profile("plain", 0.1))
    try:
        await asyncio.gather(
            *(
                store.observe("plain", concurrency=1, step_time_s=0.2, alpha=0.1)
                for _ in range(10)
                for store in (redis_store, other_replica)
            )
        )
    finally:
        await other_replica.aclose()
    stored = await redis_store.get("plain")
    assert stored is not None
    assert stored.observations == 20
    assert stored.step_time_s(1) == pytest.approx(0.2 - 0.1 * 0.9**20)
