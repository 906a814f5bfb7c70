"""Keep pool profiles and the planner current while the service runs.

* :class:`LiveProfileUpdater` — one per pool: snapshots the workers' counters every few
  seconds and folds each busy window into the stored profile
  (:func:`~tts_orchestrator.planning.profiler.observation_from_counters`, ``PoolProfile.observe``).
* :class:`LivePlanner` — owns the current :class:`~tts_orchestrator.planning.Planner`: seeds
  the store from the profiles file on start (pools the store does not know yet), reloads the
  store's profiles every interval (every API replica folds observations into the same Redis
  keys) and swaps in ``planner.with_profiles(...)``. ``live.planner`` is always usable.

The API lifespan builds one :class:`LivePlanner` with a :class:`LivePool` per pool and closes
it on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from policies.accuracy import AccuracyEstimator
from policies.profile import ProfileSet
from tts_orchestrator.backends.base import WorkerMetrics
from tts_orchestrator.config.planning import PlannerSettings
from tts_orchestrator.exceptions import TTSError
from tts_orchestrator.planning.planner import Planner, load_accuracy
from tts_orchestrator.planning.profiler import LiveObservation, observation_from_counters
from tts_orchestrator.planning.store import FileProfileStore, ProfileStore

log = logging.getLogger(__name__)

MetricsSource = Callable[[], Awaitable[Sequence[WorkerMetrics]]]


class LiveProfileUpdater:
    """Keeps a pool's stored profile current from its live traffic.

    Every ``interval_s`` it snapshots each worker's metrics (``metrics`` returns one snapshot
    per worker, e.g. ``PoolRunner.metrics``) and folds each busy window into the store with
    weight ``alpha``. Store or worker errors are logged and the loop goes on.
    """

    def __init__(
        self,
        store: ProfileStore,
        *,
        pool: str,
        engine: str,
        metrics: MetricsSource,
        interval_s: float = 5.0,
        alpha: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._clock = clock
        self.pool = pool
        self.engine = engine
        self._metrics = metrics
        self.interval_s = interval_s
        self.alpha = alpha
        self._last: tuple[float, Sequence[WorkerMetrics]] | None = None

    async def poll_once(self) -> list[LiveObservation]:
        """Take a snapshot; fold and return the observations since the previous one."""
        now, snapshot = self._clock(), await self._metrics()
        previous, self._last = self._last, (now, snapshot)
        if previous is None or len(previous[1]) != len(snapshot):
            return []
        wall = now - previous[0]
        observations = [
            obs
            for before, after in zip(previous[1], snapshot, strict=True)
            if (obs := observation_from_counters(before, after, wall_s=wall, engine=self.engine))
        ]
        for obs in observations:
            await self.store.observe(
                self.pool,
                concurrency=obs.concurrency,
                step_time_s=obs.step_time_s,
                accepted_tokens_per_step=obs.accepted_tokens_per_step,
                alpha=self.alpha,
            )
        return observations

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            try:
                await self.poll_once()
            except TTSError as exc:
                log.warning("live profile update of %s failed: %s", self.pool, exc)
            await asyncio.sleep(self.interval_s)


@dataclass(frozen=True)
class LivePool:
    """What the live planner needs of one pool: its name, engine and a metrics source."""

    name: str
    engine: str
    metrics: MetricsSource


class LivePlanner:
    """The current planner, refreshed from a (shared) profile store."""

    def __init__(
        self,
        settings: PlannerSettings,
        *,
        store: ProfileStore,
        accuracy: AccuracyEstimator | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.planner = Planner(
            ProfileSet(),
            accuracy=accuracy or load_accuracy(settings.accuracy_logs),
            settings=settings,
        )
        self._pools: tuple[str, ...] = ()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, pools: Sequence[LivePool]) -> None:
        """Seed the store from the profiles file, load, and start the background updates."""
        self._pools = tuple(p.name for p in pools)
        await self.seed()
        await self.refresh()
        interval = self.settings.live_update_interval_s
        for pool in pools:
            updater = LiveProfileUpdater(
                self.store,
                pool=pool.name,
                engine=pool.engine,
                metrics=pool.metrics,
                interval_s=interval,
            )
            self._tasks.append(asyncio.create_task(updater.run(), name=f"profile-{pool.name}"))
        self._tasks.append(asyncio.create_task(self._refresh_loop(), name="planner-refresh"))

    async def seed(self) -> int:
        """Copy file profiles of pools the store lacks into the store; returns how many."""
        if self.settings.profiles_path is None:
            return 0
        from_file = await FileProfileStore(self.settings.profiles_path).load(self._pools)
        stored = set((await self.store.load(self._pools)).pools)
        missing = [p for p in from_file.profiles if p.pool not in stored]
        for profile in missing:
            await self.store.put(profile)
        return len(missing)

    async def refresh(self) -> Planner:
        """Reload the pools' profiles from the store into a new planner."""
        profiles = await self.store.load(self._pools)
        self.planner = self.planner.with_profiles(profiles)
        return self.planner

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.live_update_interval_s)
            try:
                await self.refresh()
            except TTSError as exc:
                log.warning("planner refresh failed (keeping the last profiles): %s", exc)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
