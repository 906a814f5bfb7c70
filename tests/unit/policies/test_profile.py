from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from policies.profile import PoolProfile, ProfileSet, SpeculativeMethod, StepTimePoint


def _profile(
    points: dict[int, float],
    *,
    pool: str = "plain",
    method: SpeculativeMethod = SpeculativeMethod.NONE,
    depth: int = 0,
    accepted: float = 1.0,
) -> PoolProfile:
    return PoolProfile(
        pool=pool,
        engine="llama_cpp",
        model="qwen2.5-1.5b",
        machine="test-2core",
        measured_at=datetime(2025, 1, 1, tzinfo=UTC),
        speculative_method=method,
        speculative_depth=depth,
        step_times=tuple(StepTimePoint(concurrency=c, step_time_s=t) for c, t in points.items()),
        prefill_tokens_per_s=200.0,
        accepted_tokens_per_step=accepted,
        max_concurrency=8,
    )


CURVE = {4: 0.2, 1: 0.1, 8: 0.4}  # deliberately unsorted


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [
        pytest.param(0.5, 0.1, id="below-first-point-is-flat"),
        pytest.param(1, 0.1, id="first-point"),
        pytest.param(2.5, 0.15, id="interpolated-1-4"),
        pytest.param(4, 0.2, id="middle-point"),
        pytest.param(6, 0.3, id="interpolated-4-8"),
        pytest.param(8, 0.4, id="last-point"),
        pytest.param(12, 0.6, id="extrapolated-along-last-slope"),
    ],
)
def test_step_time_interpolates_and_extrapolates(concurrency: float, expected: float) -> None:
    assert _profile(CURVE).step_time_s(concurrency) == pytest.approx(expected)


def test_single_point_curve_is_constant() -> None:
    p = _profile({2: 0.3})
    assert [p.step_time_s(c) for c in (1, 2, 50)] == [0.3, 0.3, 0.3]


def test_extrapolation_never_decreases() -> None:
    p = _profile({1: 0.3, 2: 0.2})  # noisy measurement: faster at 2
    assert p.step_time_s(10) == pytest.approx(0.2)


def test_points_are_stored_sorted() -> None:
    assert [pt.concurrency for pt in _profile(CURVE).step_times] == [1, 4, 8]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"depth": 3}, "needs a speculative method", id="depth-without-method"),
        pytest.param({"accepted": 1.5}, "1.0 without speculation", id="acceptance-without-spec"),
        pytest.param(
            {"method": SpeculativeMethod.DRAFT, "depth": 2, "accepted": 3.5},
            "cannot exceed",
            id="acceptance-above-depth-plus-one",
        ),
    ],
)
def test_inconsistent_speculation_is_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _profile(CURVE, **kwargs)  # type: ignore[arg-type]


def test_duplicate_concurrency_is_rejected() -> None:
    with pytest.raises(ValidationError, match="duplicate"):
        PoolProfile(
            pool="x",
            engine="e",
            model="m",
            step_times=(
                StepTimePoint(concurrency=1, step_time_s=0.1),
                StepTimePoint(concurrency=1, step_time_s=0.2),
            ),
            prefill_tokens_per_s=1.0,
            max_concurrency=1,
        )


def test_speculation_speedup_compares_per_sequence_rates() -> None:
    plain = _profile({1: 0.1, 8: 0.2})
    spec = _profile(
        {1: 0.18, 8: 0.5}, pool="draft", method=SpeculativeMethod.DRAFT, depth=4, accepted=2.0
    )
    assert spec.speedup_over(plain, 1) == pytest.approx(2.0 / 0.18 / 10.0)
    assert spec.speedup_over(plain, 8) == pytest.approx(2.0 / 0.5 / 5.0)  # < 1: slower
    assert spec.decode_tokens_per_s(1) == pytest.approx(2.0 / 0.18)


def test_observe_moves_a_measured_point_by_ema() -> None:
    p = _profile(CURVE).observe(concurrency=4, step_time_s=0.4, alpha=0.25)
    assert p.step_time_s(4) == pytest.approx(0.75 * 0.2 + 0.25 * 0.4)
    assert p.step_time_s(1) == pytest.approx(0.1)
    assert p.observations == 1


def test_observe_adds_a_point_at_a_new_concurrency_from_the_prediction() -> None:
    p = _profile(CURVE).observe(concurrency=2, step_time_s=0.5, alpha=0.5)
    predicted = 0.1 + (0.2 - 0.1) / 3  # interpolated at 2 before the update
    assert [pt.concurrency for pt in p.step_times] == [1, 2, 4, 8]
    assert p.step_time_s(2) == pytest.approx(0.5 * predicted + 0.5 * 0.5)


def test_observe_acceptance_only_for_speculative_pools() -> None:
    spec = _profile(CURVE, method=SpeculativeMethod.DRAFT, depth=4, accepted=2.0)
    updated = spec.observe(concurrency=1, accepted_tokens_per_step=3.0, alpha=0.5)
    assert updated.accepted_tokens_per_step == pytest.approx(2.5)
    # clamped to depth + 1 before averaging
    assert spec.observe(
        concurrency=1, accepted_tokens_per_step=99.0, alpha=1.0
    ).accepted_tokens_per_step == pytest.approx(5.0)
    plain = _profile(CURVE)
    assert plain.observe(concurrency=1, accepted_tokens_per_step=3.0).accepted_tokens_per_step == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"concurrency": 1, "alpha": 0.0}, id="alpha-zero"),
        pytest.param({"concurrency": 0}, id="concurrency-zero"),
        pytest.param({"concurrency": 1, "step_time_s": -1.0}, id="negative-step"),
    ],
)
def test_observe_rejects_bad_input(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        _profile(CURVE).observe(**kwargs)  # type: ignore[arg-type]


def test_profile_set_round_trips_through_json_and_files(tmp_path: Path) -> None:
    profiles = ProfileSet.of(
        [
            _profile(CURVE),
            _profile({1: 0.2}, pool="draft", method=SpeculativeMethod.DRAFT, depth=3, accepted=1.7),
        ]
    )
    assert ProfileSet.from_json(profiles.to_json()) == profiles
    path = tmp_path / "profiles.json"
    profiles.save(path)
    loaded = ProfileSet.load(path)
    assert loaded == profiles
    assert loaded.get("draft").speculative_method is SpeculativeMethod.DRAFT
    assert loaded.get("plain").step_time_s(6) == pytest.approx(0.3)


def test_profile_set_lookup_and_replace() -> None:
    profiles = ProfileSet.of([_profile(CURVE)])
    with pytest.raises(KeyError, match="known: \\['plain'\\]"):
        profiles.get("missing")
    updated = profiles.with_profile(profiles.get("plain").observe(concurrency=1, step_time_s=1.0))
    assert updated.pools == ["plain"]
    assert updated.get("plain").observations == 1
    assert "plain" in updated
    assert "draft" not in updated


def test_profile_set_rejects_duplicate_pools() -> None:
    with pytest.raises(ValidationError, match="unique"):
        ProfileSet.of([_profile(CURVE), _profile(CURVE)])
