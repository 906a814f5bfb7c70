"""Mathematical equivalence of two answers with math-verify, in worker processes under our timeout.

Why a process pool: math-verify's own timeout arms `SIGALRM`, which only works on the main
thread of the main interpreter and misbehaves under web servers and thread pools. We call it with
`parsing_timeout=None` / `timeout_seconds=None` inside spawned worker processes and enforce the
timeout ourselves: a comparison that overruns is answered "not equivalent, timed out", the stuck
worker is killed and the pool is rebuilt lazily.

How the timeout stays honest: every comparison is driven by one dispatcher thread, and there are
exactly as many dispatcher threads as worker processes, so a job reaches an idle, warm worker as
soon as it is submitted and the clock measures the comparison itself, not queueing behind other
jobs or process start-up (a new pool is warmed before the clock starts).

Semantics (math-verify is the reference; answers are compared as if each were `\\boxed{...}`):
`\\frac{1}{2}` = `0.5`; `90^\\circ` = `90`; `(1,2]` != `[1,2)`; `\\text{(B)}` = `B`;
`1000000` != `1000001` (integers compare exactly, no relative tolerance);
percent: `50\\%` = `0.5` and `50\\%` = `50`, but bare `50` != `0.5` (no x100 rule).
The comparison is not symmetric in general (gold first), so verdicts are cached per ordered pair.

Workers use the `spawn` start method (safe next to threads, Ray and event loops); as with any
spawned process, a script that creates a checker must guard its entry point with
`if __name__ == "__main__":`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Self

from pydantic import BaseModel, Field

from verifiers.answers import normalize_answer, strip_math_delimiters

__all__ = ["EquivalenceChecker", "EquivalenceVerdict", "VerifyFn", "verify_pair"]

logger = logging.getLogger(__name__)

VerifyFn = Callable[[str, str], bool]
"""A picklable (module-level) comparison run inside the worker: (gold, pred) -> equivalent."""

_STARTUP_TIMEOUT_S = 120.0
_WARMUP_PAIR = ("\\frac{x}{2}", "0.5x")  # symbolic, so every heavy import is done


def verify_pair(gold: str, pred: str) -> bool:
    """math-verify's verdict on two extracted answers, with its SIGALRM timeouts disabled.

    Blocking and possibly slow (sympy); call it through `EquivalenceChecker`, not on an event
    loop. Each side is parsed as the content of a `\\boxed{}`; a side math-verify cannot parse
    is equivalent only to a side with the same normalised text.
    """
    from math_verify import parse, verify  # heavy import, kept out of module import time

    gold_parsed = parse(f"\\boxed{{{strip_math_delimiters(gold)}}}", parsing_timeout=None)
    pred_parsed = parse(f"\\boxed{{{strip_math_delimiters(pred)}}}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return normalize_answer(gold) == normalize_answer(pred)
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _init_worker(barrier: threading.Barrier | None, verify_fn: VerifyFn) -> None:
    """Worker start-up: silence math-verify's "timeout disabled" warning, warm the imports."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    verify_fn(*_WARMUP_PAIR)
    if barrier is not None:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=_STARTUP_TIMEOUT_S)


def _ready() -> bool:
    return True


class EquivalenceVerdict(BaseModel):
    """One comparison's outcome."""

    equivalent: bool = Field(description="The answers are equivalent (False when timed out).")
    timed_out: bool = Field(default=False, description="Overran the timeout.")
    cached: bool = Field(default=False, description="From the cache or the fast path.")
    elapsed_s: float = Field(default=0.0, description="Wall time spent in the worker pool.")


class _PoolSlot:
    """The current process pool and its generation (bumped on every rebuild)."""

    def __init__(self) -> None:
        self.pool: ProcessPoolExecutor | None = None
        self.generation = 0


class EquivalenceChecker:
    """Decides answer equivalence off the event loop, with a timeout, a fast path and a cache.

    Thread-safe: `equivalent_sync` may be called from any thread (never from a running event
    loop's thread, where `await equivalent(...)` is the non-blocking form).
    """

    def __init__(
        self,
        *,
        timeout_s: float = 3.0,
        max_workers: int = 1,
        cache_size: int = 4096,
        verify_fn: VerifyFn = verify_pair,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.timeout_s = timeout_s
        self.max_workers = max_workers
        self._verify_fn = verify_fn
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], EquivalenceVerdict] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._pool_lock = threading.Lock()  # held for seconds while workers start
        self._dispatch_lock = threading.Lock()  # taken on the event loop: never held long
        self._slot = _PoolSlot()
        self._dispatch: ThreadPoolExecutor | None = None
        self._closed = False
        self.timeouts = 0
        """Number of comparisons that timed out (each one rebuilt the pool)."""

    # -- public API -------------------------------------------------------------------------

    async def check(self, gold: str, pred: str) -> EquivalenceVerdict:
        """Full verdict for one ordered pair, without blocking the event loop."""
        quick = self._quick(gold, pred)
        if quick is not None:
            return quick
        future = self._dispatcher().submit(self._run, gold, pred)
        return await asyncio.wrap_future(future)

    def check_sync(self, gold: str, pred: str) -> EquivalenceVerdict:
        """Blocking form of `check`, safe from any non-event-loop thread."""
        quick = self._quick(gold, pred)
        if quick is not None:
            return quick
        return self._dispatcher().submit(self._run, gold, pred).result()

    async def equivalent(self, gold: str, pred: str) -> bool:
        return (await self.check(gold, pred)).equivalent

    def equivalent_sync(self, gold: str, pred: str) -> bool:
        return self.check_sync(gold, pred).equivalent

    async def equivalent_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        """Verdicts for many (gold, pred) pairs, run concurrently up to `max_workers`."""
        verdicts = await asyncio.gather(*(self.check(g, p) for g, p in pairs))
        return [v.equivalent for v in verdicts]

    def close(self) -> None:
        """Stop the dispatcher threads and worker processes. Idempotent."""
        with self._dispatch_lock:
            self._closed = True
            dispatch, self._dispatch = self._dispatch, None
        with self._pool_lock:
            pool, self._slot.pool = self._slot.pool, None
        if dispatch is not None:
            dispatch.shutdown(wait=True, cancel_futures=True)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # -- internals --------------------------------------------------------------------------

    def _quick(self, gold: str, pred: str) -> EquivalenceVerdict | None:
        """Fast path (same normalised text) or cached verdict; None means ask a worker."""
        if self._closed:
            raise RuntimeError("EquivalenceChecker is closed")
        if gold == pred or normalize_answer(gold) == normalize_answer(pred):
            return EquivalenceVerdict(equivalent=True, cached=True)
        with self._cache_lock:
            hit = self._cache.get((gold, pred))
            if hit is not None:
                self._cache.move_to_end((gold, pred))
                return hit.model_copy(update={"cached": True})
        return None

    def _remember(self, gold: str, pred: str, verdict: EquivalenceVerdict) -> None:
        if self._cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[(gold, pred)] = verdict
            self._cache.move_to_end((gold, pred))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def warm(self) -> None:
        """Start the worker processes now (blocking; call it from a thread at start-up)."""
        self._warm_pool()

    def _dispatcher(self) -> ThreadPoolExecutor:
        with self._dispatch_lock:
            if self._closed:
                raise RuntimeError("EquivalenceChecker is closed")
            if self._dispatch is None:
                self._dispatch = ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix="equivalence"
                )
            return self._dispatch

    def _warm_pool(self) -> tuple[ProcessPoolExecutor, int]:
        """The current pool, built and warmed (every worker started) if there is none."""
        with self._pool_lock:
            if self._closed:
                raise RuntimeError("EquivalenceChecker is closed")
            if self._slot.pool is None:
                ctx = multiprocessing.get_context("spawn")
                barrier = ctx.Barrier(self.max_workers) if self.max_workers > 1 else None
                pool = ProcessPoolExecutor(
                    max_workers=self.max_workers,
                    mp_context=ctx,
                    initializer=_init_worker,
                    initargs=(barrier, self._verify_fn),
                )
                # One submit per worker makes the executor start them all; the barrier in the
                # initializer holds every worker until all are warm.
                warmups: list[Future[bool]] = [pool.submit(_ready) for _ in range(self.max_workers)]
                for f in warmups:
                    f.result(timeout=_STARTUP_TIMEOUT_S)
                self._slot.pool = pool
                self._slot.generation += 1
            return self._slot.pool, self._slot.generation

    def _discard_pool(self, generation: int) -> None:
        """Kill the workers of pool `generation` (if still current); the next job rebuilds."""
        with self._pool_lock:
            if self._slot.generation != generation or self._slot.pool is None:
                return
            pool, self._slot.pool = self._slot.pool, None
        # ProcessPoolExecutor cannot cancel a running task: kill its processes (Python >= 3.14
        # has `kill_workers()`; before that the process table is the only handle).
        kill_workers = getattr(pool, "kill_workers", None)
        if callable(kill_workers):
            kill_workers()
        else:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, gold: str, pred: str) -> EquivalenceVerdict:
        """Dispatcher-thread body: one comparison under the timeout, one retry if the pool broke
        under it for another job's timeout."""
        for attempt in range(2):
            pool, generation = self._warm_pool()
            start = time.monotonic()
            future = pool.submit(self._verify_fn, gold, pred)
            try:
                equivalent = bool(future.result(timeout=self.timeout_s))
            except FutureTimeout:
                with self._cache_lock:
                    self.timeouts += 1
                logger.warning(
                    "equivalence check timed out after %.1fs: gold=%.80r pred=%.80r",
                    self.timeout_s,
                    gold,
                    pred,
                )
                self._discard_pool(generation)
                verdict = EquivalenceVerdict(
                    equivalent=False, timed_out=True, elapsed_s=time.monotonic() - start
                )
                # Cached like any verdict: jobs never queue behind each other, so a timeout
                # means the pair itself is pathological and would time out again.
                self._remember(gold, pred, verdict)
                return verdict
            except BrokenProcessPool:
                self._discard_pool(generation)
                if attempt == 0:
                    continue
                logger.warning("equivalence worker died twice on gold=%.80r pred=%.80r", gold, pred)
                return EquivalenceVerdict(equivalent=False, elapsed_s=time.monotonic() - start)
            except Exception:
                # A comparison that raises is a "no" for this pair, not a failure of the caller.
                logger.warning(
                    "equivalence check failed: gold=%.80r pred=%.80r", gold, pred, exc_info=True
                )
                equivalent = False
            verdict = EquivalenceVerdict(equivalent=equivalent, elapsed_s=time.monotonic() - start)
            self._remember(gold, pred, verdict)
            return verdict
        raise AssertionError("unreachable")
