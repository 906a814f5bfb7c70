"""The pure parts of the load benchmark: added latency, the knee, the memory-growth fit."""

from __future__ import annotations

import pytest

from benchmarks.load import (
    LevelStats,
    Outcome,
    RequestResult,
    SoakResult,
    growth_fit,
    knee,
    knee_claim,
    soak_section,
)

RATE = 40.0  # tokens/s: 400 tokens are ideally 10 s


def _level(c: int, *totals: float, outcome: Outcome = Outcome.COMPLETED) -> LevelStats:
    return LevelStats(c, [RequestResult(outcome, t, completion_tokens=400) for t in totals])


def test_added_ratio_is_relative_to_the_ideal_time() -> None:
    assert RequestResult(Outcome.COMPLETED, 11.0, completion_tokens=400).added_ratio(RATE) == (
        pytest.approx(0.1)
    )
    assert RequestResult(Outcome.HUNG, 99.0, completion_tokens=400).added_ratio(RATE) is None


def _lossy(c: int, lost: Outcome) -> LevelStats:
    """19 requests well within the threshold and one that did not complete."""
    level = _level(c, *([10.1] * 19))
    level.results.append(RequestResult(lost, 10.1, completion_tokens=400))
    return level


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        pytest.param([_level(1, 10.1), _level(2, 10.5), _level(4, 12.0)], 2, id="third-too-slow"),
        pytest.param([_level(1, 10.1), _level(2, 10.2)], 2, id="never-exceeded"),
        pytest.param([_level(1, 12.0)], None, id="first-too-slow"),
        pytest.param(
            [_level(1, 10.1), _level(2, 10.1, outcome=Outcome.HUNG), _level(4, 10.1)],
            1,
            id="a-hung-request-ends-the-knee",
        ),
        pytest.param(
            [_level(1, 10.1), _level(2, *([10.1] * 19 + [13.0]))], 2, id="one-slow-in-20-is-p95"
        ),
        pytest.param(
            [_level(1, 10.1), _lossy(2, Outcome.FAILED_CLEANLY), _level(4, 10.1)],
            1,
            id="a-failed-request-ends-the-knee-though-the-rest-are-fast",
        ),
        pytest.param(
            [_level(1, 10.1), _lossy(2, Outcome.HUNG)], 1, id="a-hung-one-among-fast-ones"
        ),
    ],
)
def test_knee_is_the_last_level_within_the_threshold(
    levels: list[LevelStats], expected: int | None
) -> None:
    assert knee(levels, RATE, 0.10) == expected


@pytest.mark.parametrize(
    ("levels", "claim"),
    [
        pytest.param(
            [_level(1, 10.1), _level(2, 10.5), _level(4, 12.0)],
            "**Knee: concurrency 2**",
            id="found",
        ),
        pytest.param(
            [_level(1, 10.1), _level(2, 10.2)],
            "**No knee reached**: every level stayed within, up to the largest tried, "
            "concurrency 2 (a lower bound, not a limit found)",
            id="largest-tried",
        ),
        pytest.param([_level(1, 12.0)], "**Knee: below the first level**", id="none"),
    ],
)
def test_the_knee_is_claimed_only_when_a_level_past_it_failed(
    levels: list[LevelStats], claim: str
) -> None:
    assert knee_claim(levels, RATE, 0.10) == claim


@pytest.mark.parametrize(
    ("values", "slope"),
    [
        pytest.param([500.0] * 10, 0.0, id="flat"),
        pytest.param([400.0 + 5 * i for i in range(10)], 60.0, id="leak-5mb-per-sample"),
        pytest.param([900.0, 800.0, 700.0, 600.0] + [500.0] * 6, 0.0, id="warm-up-ignored"),
    ],
)
def test_growth_fit_uses_the_second_half(values: list[float], slope: float) -> None:
    times = [5.0 * i for i in range(len(values))]  # one sample every 5 s
    assert growth_fit(times, values)[0] == pytest.approx(slope, abs=1e-6)


def _soak(api_mb: list[float]) -> SoakResult:
    times = [5.0 * i for i in range(len(api_mb))]
    done = [RequestResult(Outcome.COMPLETED, 10.0, completion_tokens=400)]
    return SoakResult(2, done, times, api_mb, [m + 100 for m in api_mb])


@pytest.mark.parametrize(
    ("api_mb", "bounded"),
    [
        pytest.param([500.0] * 40, True, id="flat"),
        pytest.param([500.0 + (i % 2) * 4 for i in range(40)], True, id="noise-within-10mb"),
        # +1 MB per 5 s sample = +12 MB/min, about +40 MB over the 200 s soak.
        pytest.param([400.0 + i for i in range(40)], False, id="leak"),
        pytest.param([1000.0 - 3 * i for i in range(40)], False, id="shrinking-is-not-bounded"),
    ],
)
def test_soak_verdict_is_computed_from_the_fit(api_mb: list[float], bounded: bool) -> None:
    text, _, _, verdict = soak_section(_soak(api_mb), soak_s=200.0)
    assert verdict is bounded
    last_row = text.splitlines()[-1]
    assert last_row.startswith("| bounded")
    assert last_row.endswith("| yes |" if bounded else "| NO |")
