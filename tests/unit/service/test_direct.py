"""The direct data path: which worker URLs only their own node reaches, and local placement
from the pool actor's status (a recording stub stands in for the actor: pure logic here; the
integration tests run the real actor), and the actor body's lease counting."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tts_orchestrator.actors.direct import LEASE_NOTICE_DELAY_S, DirectStreams, is_loopback
from tts_orchestrator.actors.jobs import BranchSpec
from tts_orchestrator.actors.pool import PoolRunner
from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.config import PoolConfig
from tts_orchestrator.exceptions import NoWorkerAvailable


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.0.0.2:8080/", True),
        ("http://localhost:9000", True),
        ("http://[::1]:8000", True),
        ("http://10.0.3.7:8000", False),
        ("http://worker-3.cluster.local:8000", False),
        ("http://0.0.0.0:8000", False),
    ],
)
def test_loopback_urls(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback


class _Method:
    """`actor.method.remote(...)`: records the call; a query returns an awaitable of `result`,
    a notice nothing (its caller drops the reference)."""

    def __init__(
        self, calls: list[tuple[str, tuple[Any, ...]]], name: str, result: Any = None
    ) -> None:
        self.calls, self.name, self.result = calls, name, result

    def remote(self, *args: Any) -> Any:
        self.calls.append((self.name, args))
        if self.result is None:
            return None

        async def value() -> Any:
            return self.result

        return value()


class PoolActorStub:
    """The pool actor's status / leased / release surface, recorded (pure placement logic)."""

    def __init__(self, workers: list[dict[str, Any]]) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.status = _Method(self.calls, "status", {"workers": workers})
        self.leased = _Method(self.calls, "leased")
        self.release = _Method(self.calls, "release")
        self.check_worker = _Method(self.calls, "check_worker")

    def notices(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(n, a) for n, a in self.calls if n in ("leased", "release")]


async def _refreshed(
    pool: PoolConfig, workers: list[dict[str, Any]]
) -> tuple[PoolActorStub, DirectStreams]:
    """A direct side over a recording actor, its view taken from the actor's status."""
    actor = PoolActorStub(workers)
    direct = DirectStreams(pool, actor, lease_ttl_s=60.0)
    await direct.refresh()
    return actor, direct


async def _notices_sent() -> None:
    await asyncio.sleep(LEASE_NOTICE_DELAY_S * 4)


def _worker(i: int, *, load: int = 0, healthy: bool = True) -> dict[str, Any]:
    return {
        "name": f"p/{i}",
        "url": f"http://127.0.0.1:{9000 + i}",
        "healthy": healthy,
        "load": load,
    }


def _spec(i: int, prefer: str | None = None) -> BranchSpec:
    return BranchSpec(
        index=i, prompt="x", params=SamplingParams(max_tokens=1), prefer_worker=prefer
    )


@pytest.fixture
def pool() -> PoolConfig:
    return PoolConfig(name="p", model="m", urls=["http://127.0.0.1:9000"])


async def test_places_on_the_least_loaded_healthy_worker_counting_its_own_branches(
    pool: PoolConfig,
) -> None:
    actor, direct = await _refreshed(
        pool, [_worker(0, load=2), _worker(1, load=1), _worker(2, healthy=False)]
    )
    placed = [(await direct._place("r", _spec(i))).name for i in range(4)]
    # loads (p/0, p/1): (2, 1) → p/1; (2, 2) tie, first listed → p/0; (3, 2) → p/1; (3, 3) →
    # p/0. The unhealthy p/2 (load 0) is never chosen.
    assert placed == ["p/1", "p/0", "p/1", "p/0"]
    assert actor.notices() == []  # told once the engine requests are on their way
    await _notices_sent()
    assert [a for _, a in actor.notices()] == [
        ("r", 0, "p/1", 60.0),
        ("r", 1, "p/0", 60.0),
        ("r", 2, "p/1", 60.0),
        ("r", 3, "p/0", 60.0),
    ]
    backend = await direct._place("q", _spec(0, prefer="p/0"))
    assert backend.name == "p/0"  # a continuation goes back to its worker's cache
    await direct.aclose()


async def test_release_uncounts_here_and_tells_the_actor_once(pool: PoolConfig) -> None:
    actor, direct = await _refreshed(pool, [_worker(0), _worker(1)])
    backend = await direct._place("r", _spec(0))
    await _notices_sent()
    direct._release("r", _spec(0), backend)
    direct._release("r", _spec(0), backend)  # a second release of the same branch is a no-op
    assert actor.notices()[-1] == ("release", ("r", [0]))
    assert sum(n == "release" for n, _ in actor.notices()) == 1
    assert (await direct._place("s", _spec(0))).name == backend.name  # its load is back to 0
    await direct.aclose()


async def test_a_branch_over_before_its_placement_was_told_is_never_told(
    pool: PoolConfig,
) -> None:
    actor, direct = await _refreshed(pool, [_worker(0)])
    backend = await direct._place("r", _spec(0))
    direct._release("r", _spec(0), backend)
    await _notices_sent()
    assert actor.notices() == []  # neither a lease nor a release the actor would not match
    assert (await direct._place("s", _spec(0))).name == "p/0"
    await _notices_sent()
    assert actor.notices() == [("leased", ("s", 0, "p/0", 60.0))]
    await direct.aclose()


async def test_a_failed_worker_is_avoided_until_the_actor_says_it_is_back(
    pool: PoolConfig,
) -> None:
    actor, direct = await _refreshed(pool, [_worker(0), _worker(1, load=5)])
    first = await direct._place("r", _spec(0))
    assert first.name == "p/0"
    await direct._failed(first)
    assert ("check_worker", ("p/0",)) in actor.calls
    assert (await direct._place("r", _spec(1))).name == "p/1"
    await direct.refresh()  # the actor's health check found it healthy again
    assert (await direct._place("r", _spec(2))).name == "p/0"
    await direct.aclose()


async def test_with_no_healthy_worker_in_view_it_asks_the_actor_before_failing(
    pool: PoolConfig,
) -> None:
    actor, direct = await _refreshed(pool, [_worker(0)])
    await direct._failed(await direct._place("r", _spec(0)))  # marked down here only
    # The actor has since restarted it (its status says healthy): placed, not an error.
    assert (await direct._place("r", _spec(1))).name == "p/0"
    assert sum(n == "status" for n, _ in actor.calls) == 2
    await direct.aclose()


async def test_no_healthy_worker_is_an_error(pool: PoolConfig) -> None:
    _, direct = await _refreshed(pool, [_worker(0, healthy=False)])
    with pytest.raises(NoWorkerAvailable, match="no healthy worker in pool p"):
        await direct._place("r", _spec(0))
    await direct.aclose()


async def test_the_pool_actor_counts_leases_until_released_or_expired(pool: PoolConfig) -> None:
    runner = PoolRunner(pool, ["http://127.0.0.1:9000", "http://127.0.0.1:9001"])
    names = [b.name for b in runner.backends]
    runner.leased("r", 0, names[0], 60.0)
    runner.leased("r", 0, names[0], 60.0)  # told twice: counted once
    runner.leased("r", 1, names[1], 60.0)
    runner.leased("s", 0, names[1], 1.0)
    runner.leased("t", 0, "elsewhere/9", 60.0)  # not this pool's worker: ignored
    status = await runner.status()
    assert [w["load"] for w in status["workers"]] == [1, 2]
    assert [w["url"] for w in status["workers"]] == [
        "http://127.0.0.1:9000",
        "http://127.0.0.1:9001",
    ]
    runner.release("r", [0])
    assert runner.expire_leases(now=time.monotonic() + 30.0) == 1  # s's API process died
    status = await runner.status()
    assert [w["load"] for w in status["workers"]] == [0, 1]
    assert status["inflight_requests"] == 1
    runner.release("r")
    assert [w["load"] for w in (await runner.status())["workers"]] == [0, 0]
    await runner.stop()
