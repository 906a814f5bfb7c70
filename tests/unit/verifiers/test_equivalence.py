"""math-verify equivalence: the verdicts on tricky pairs, and the worker pool with our timeout.

The verdict table runs `verify_pair` in-process (it is what the workers run); the pool tests
share one checker per module because starting a spawned worker costs about a second.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from verifiers.equivalence import EquivalenceChecker, verify_pair

# (gold, pred, equivalent) — math-verify is the reference.
TRICKY_PAIRS = [
    pytest.param(r"\frac{1}{2}", "0.5", True, id="frac-vs-decimal"),
    pytest.param(r"\dfrac{1}{2}", r"\frac12", True, id="dfrac-vs-short-frac"),
    pytest.param(r"90^\circ", "90", True, id="degrees"),
    pytest.param("(1,2]", "(1,2]", True, id="interval-same"),
    pytest.param("(1,2]", "[1,2)", False, id="interval-brackets-differ"),
    pytest.param(r"\text{(B)}", "B", True, id="text-choice"),
    pytest.param("B", "(B)", True, id="choice-parens"),
    pytest.param("C", "D", False, id="choice-differs"),
    pytest.param("1000000", "1000001", False, id="large-int-no-rel-tol"),
    pytest.param("123456789", "123456790", False, id="larger-int-no-rel-tol"),
    pytest.param("10^{100}", "10^{100}+1", False, id="huge-int-no-rel-tol"),
    pytest.param("1,000,000", "1000000", True, id="thousands-separator"),
    # Percent: math-verify reads 50\% as 50/100, and also accepts the bare number.
    pytest.param(r"50\%", "0.5", True, id="percent-vs-fraction"),
    pytest.param(r"50\%", "50", True, id="percent-vs-number"),
    pytest.param("50", "0.5", False, id="no-x100-rule"),
    pytest.param(r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})", True, id="tuple"),
    pytest.param("x^2+2x+1", "(x+1)^2", True, id="symbolic"),
    pytest.param(r"\sqrt{2}/2", r"\frac{\sqrt2}{2}", True, id="sqrt"),
    pytest.param("0.3333333", r"\frac13", True, id="float-rounding"),
    pytest.param("3.14159", r"\pi", False, id="pi-not-rounded"),
    pytest.param("12", "12.0", True, id="int-vs-float"),
    pytest.param(r"\{2,3\}", r"\{3,2\}", True, id="set-order"),
    pytest.param("-2,1", r"1,\ -2", True, id="solution-list-order"),
    pytest.param("x=5", "5", True, id="assignment"),
    pytest.param(r"\$18.90", "18.9", True, id="currency"),
    pytest.param(r"5\text{ cm}", "5", True, id="units"),
    pytest.param(r"3 \pm 2\sqrt{2}", r"3 + 2\sqrt{2}, 3 - 2\sqrt{2}", True, id="plus-minus"),
    pytest.param("2", "3", False, id="different"),
    pytest.param("$5$", "5", True, id="math-delimiters"),
]


@pytest.mark.parametrize(("gold", "pred", "expected"), TRICKY_PAIRS)
def test_verify_pair(gold: str, pred: str, expected: bool) -> None:
    assert verify_pair(gold, pred) is expected


def test_verify_pair_works_off_the_main_thread() -> None:
    """With SIGALRM enabled math-verify raises off the main thread; ours must not."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(verify_pair, [r"\frac{1}{2}", "7"], ["0.5", "8"]))
    assert results == [True, False]
    assert threading.current_thread() is threading.main_thread()


@pytest.fixture(scope="module")
def checker() -> Iterator[EquivalenceChecker]:
    with EquivalenceChecker(timeout_s=10.0, max_workers=1) as c:
        yield c


async def test_checker_matches_verify_pair(checker: EquivalenceChecker) -> None:
    pairs = [(r"\frac{1}{2}", "0.5"), ("1000000", "1000001"), ("(1,2]", "[1,2)"), ("B", "(B)")]
    assert await checker.equivalent_many(pairs) == [verify_pair(g, p) for g, p in pairs]


async def test_fast_path_skips_the_pool() -> None:
    with EquivalenceChecker() as fresh:
        start = time.monotonic()
        verdict = await fresh.check(r"\dfrac{1}{2}", r"$\frac12$")
        elapsed = time.monotonic() - start
    assert verdict.equivalent
    assert verdict.cached
    assert elapsed < 0.5  # a worker start alone takes about a second


async def test_verdicts_are_cached(checker: EquivalenceChecker) -> None:
    first = await checker.check("x^2", "x \\cdot x")
    second = await checker.check("x^2", "x \\cdot x")
    assert first.equivalent
    assert not first.cached
    assert second.equivalent
    assert second.cached


def test_sync_from_threads_matches_main_thread(checker: EquivalenceChecker) -> None:
    pairs = [(r"\frac{1}{2}", "0.5"), ("2", "3"), (r"90^\circ", "90"), ("10", "10.5")]
    main = [checker.equivalent_sync(g, p) for g, p in pairs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda gp: checker.equivalent_sync(*gp), pairs))
    assert threaded == main == [True, False, True, False]


# sympy evaluates 10000000! in full while parsing: minutes of CPU with bounded memory (~30 MB).
STUCK = "10000000!"


async def test_timeout_kills_worker_and_recovers() -> None:
    with EquivalenceChecker(timeout_s=1.0, max_workers=1, cache_size=0) as slow:
        assert await slow.equivalent("2", "2.0")  # warm the pool first
        start = time.monotonic()
        verdict = await slow.check(STUCK, "5")
        assert time.monotonic() - start < 10.0  # generous: the machine may be loaded
        assert verdict.timed_out
        assert not verdict.equivalent
        assert slow.timeouts == 1
        # The pool was rebuilt: the next comparison gets a fresh worker and a real verdict.
        after = await slow.check(r"\frac{1}{2}", "0.5")
        assert after.equivalent
        assert not after.timed_out


async def test_timeout_does_not_spoil_concurrent_checks() -> None:
    """Killing the pool for one stuck job retries the other job on the rebuilt pool."""
    # The timeout leaves room for a loaded 2-core CI box: the fine pair needs well under a
    # second, the stuck one never finishes.
    with EquivalenceChecker(timeout_s=8.0, max_workers=2) as pair:
        stuck, fine = await asyncio.gather(
            pair.check(STUCK, "5"), pair.check("x^2+2x+1", "(x+1)^2")
        )
    assert stuck.timed_out
    assert not stuck.equivalent
    assert fine.equivalent
    assert not fine.timed_out


async def test_closed_checker_refuses_work() -> None:
    c = EquivalenceChecker()
    c.close()
    c.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await c.equivalent("1", "2")


@pytest.mark.parametrize(
    "kwargs", [{"timeout_s": 0.0}, {"max_workers": 0}], ids=["timeout", "workers"]
)
def test_invalid_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EquivalenceChecker(**kwargs)  # type: ignore[arg-type]
