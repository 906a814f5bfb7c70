from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from pydantic import ValidationError

from policies.latency import EmpiricalBranchLengths, LatencyModel, LognormalBranchLengths
from policies.profile import PoolProfile, SpeculativeMethod, StepTimePoint


def _profile(
    *,
    step: dict[int, float] | None = None,
    accepted: float = 1.0,
    slots: int = 8,
    shared_prefix: bool = True,
) -> PoolProfile:
    spec = accepted > 1.0
    return PoolProfile(
        pool="p",
        engine="llama_cpp",
        model="m",
        speculative_method=SpeculativeMethod.DRAFT if spec else SpeculativeMethod.NONE,
        speculative_depth=4 if spec else 0,
        step_times=tuple(
            StepTimePoint(concurrency=c, step_time_s=t)
            for c, t in (step or {1: 0.1, 8: 0.1}).items()
        ),
        prefill_tokens_per_s=1000.0,
        accepted_tokens_per_step=accepted,
        max_concurrency=slots,
        prefix_cache_shared=shared_prefix,
    )


SMALL = (10, 20, 40, 80)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_empirical_order_statistics_equal_enumeration(n: int) -> None:
    """Exact: every ordered draw of n from the samples, with replacement, equally likely."""
    draws = np.array(sorted(sorted(d) for d in itertools.product(SMALL, repeat=n)))
    expected = draws.mean(axis=0)
    got = EmpiricalBranchLengths(samples=SMALL).expected_order_statistics(n)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_empirical_cap_and_scale_apply_before_ordering() -> None:
    lengths = EmpiricalBranchLengths(samples=SMALL)
    # max of one draw of min(0.5 * x, 15) over {5, 10, 15, 15}
    assert lengths.expected_mean(cap=15, scale=0.5) == pytest.approx((5 + 10 + 15 + 15) / 4)


@pytest.mark.parametrize(("sigma", "n"), [(0.3, 1), (0.3, 8), (0.8, 4), (0.8, 32)])
def test_lognormal_order_statistics_match_monte_carlo(sigma: float, n: int) -> None:
    model = LognormalBranchLengths(mu=math.log(1000), sigma=sigma)
    rng = np.random.default_rng(7)
    samples = np.sort(np.exp(rng.normal(math.log(1000), sigma, size=(50_000, n))), axis=1)
    got = model.expected_order_statistics(n)
    np.testing.assert_allclose(got, samples.mean(axis=0), rtol=0.01)
    capped = model.expected_max(n, cap=1200)
    assert capped == pytest.approx(np.minimum(samples[:, -1], 1200).mean(), rel=0.01)


def test_lognormal_fit_recovers_parameters() -> None:
    rng = np.random.default_rng(3)
    fitted = LognormalBranchLengths.fit(np.exp(rng.normal(7.0, 0.5, size=5000)).tolist())
    assert fitted.mu == pytest.approx(7.0, abs=0.03)
    assert fitted.sigma == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="two distinct"):
        LognormalBranchLengths.fit([100, 100])


def test_expected_max_grows_with_n_and_saturates_at_the_cap() -> None:
    lengths = LognormalBranchLengths(mu=math.log(500), sigma=0.6)
    maxima = [lengths.expected_max(n) for n in (1, 2, 4, 8, 16)]
    assert maxima == sorted(maxima)
    assert maxima[0] < maxima[-1]
    assert lengths.expected_max(64, cap=800) == pytest.approx(800, rel=1e-3)


def test_constant_lengths_formula_by_hand() -> None:
    """All branches finish together: decode = L * step(load + N) / accepted."""
    model = LatencyModel(lengths=EmpiricalBranchLengths(samples=(100,)), overhead_s=0.5)
    profile = _profile(step={1: 0.1, 8: 0.8}, accepted=2.0)
    est = model.predict(profile, n_branches=3, prompt_tokens=500, pool_load=1)
    assert est.decode_s == pytest.approx(100 * profile.step_time_s(4) / 2.0)
    assert est.prefill_s == pytest.approx(0.5)
    assert est.total_s == pytest.approx(est.prefill_s + est.decode_s + 0.5)
    assert est.expected_generated_tokens == pytest.approx(300)
    assert est.waves == 1


def test_phases_price_each_stretch_at_its_concurrency() -> None:
    """Lengths {10, 30} with N=2: E1 = 15, E2 = 25 (order statistics of 2 draws)."""
    model = LatencyModel(lengths=EmpiricalBranchLengths(samples=(10, 30)))
    profile = _profile(step={1: 1.0, 2: 2.0})
    est = model.predict(profile, n_branches=2, prompt_tokens=0)
    assert est.decode_s == pytest.approx(15 * 2.0 + (25 - 15) * 1.0)
    assert est.slowest_branch_tokens == pytest.approx(25)


@pytest.mark.parametrize(
    ("kwargs", "expected_tokens"),
    [
        pytest.param({}, 1000, id="no-budget"),
        pytest.param({"thinking_budget": 300}, 300 + 64, id="budget-plus-answer"),
        pytest.param({"thinking_budget": 300, "max_tokens": 200}, 200, id="max-tokens-wins"),
        pytest.param({"max_tokens": 5000}, 1000, id="max-tokens-above-length"),
    ],
)
def test_thinking_budget_caps_the_branch(kwargs: dict[str, int], expected_tokens: float) -> None:
    model = LatencyModel(lengths=EmpiricalBranchLengths(samples=(1000,)))
    est = model.predict(_profile(), n_branches=1, prompt_tokens=0, **kwargs)
    assert est.slowest_branch_tokens == pytest.approx(expected_tokens)
    assert est.decode_s == pytest.approx(expected_tokens * 0.1)


def test_trimming_and_early_consensus_shorten_the_request() -> None:
    lengths = LognormalBranchLengths(mu=math.log(800), sigma=0.7)
    profile = _profile()
    base = LatencyModel(lengths=lengths).predict(profile, n_branches=8, prompt_tokens=0)
    trimmed = LatencyModel(lengths=lengths, trim_factor=0.6).predict(
        profile, n_branches=8, prompt_tokens=0
    )
    consensus = LatencyModel(lengths=lengths, finish_fraction=0.5).predict(
        profile, n_branches=8, prompt_tokens=0
    )
    assert trimmed.decode_s == pytest.approx(0.6 * base.decode_s)
    assert consensus.decode_s < base.decode_s
    # done at the 4th finisher of 8: expected tokens of that order statistic
    assert consensus.slowest_branch_tokens == pytest.approx(lengths.expected_order_statistics(8)[3])
    assert consensus.expected_generated_tokens < base.expected_generated_tokens


def test_branches_beyond_free_slots_run_in_waves() -> None:
    model = LatencyModel(lengths=EmpiricalBranchLengths(samples=(100,)))
    profile = _profile(slots=4)
    assert model.predict(profile, n_branches=4, prompt_tokens=0).waves == 1
    est = model.predict(profile, n_branches=6, prompt_tokens=0, pool_load=2)
    assert est.waves == 3  # two free slots: 2 + 2 + 2
    assert est.decode_s == pytest.approx(3 * 100 * 0.1)


@pytest.mark.parametrize(
    ("n", "warmup", "slots", "waves"),
    [
        pytest.param(8, 3, 8, [3, 5], id="warm-up-then-the-rest"),
        pytest.param(8, 3, 4, [3, 4, 1], id="the-rest-in-waves-of-free-slots"),
        pytest.param(8, 6, 4, [4, 2, 2], id="a-warm-up-wider-than-the-slots"),
        pytest.param(3, 3, 8, [3], id="no-branch-past-the-warm-up"),
        pytest.param(2, 3, 8, [2], id="fewer-branches-than-the-warm-up"),
    ],
)
def test_warmup_first_runs_the_rest_after_the_warm_up(
    n: int, warmup: int, slots: int, waves: list[int]
) -> None:
    model = LatencyModel(lengths=EmpiricalBranchLengths(samples=(100,)))
    profile = _profile(slots=slots)
    est = model.predict(profile, n_branches=n, prompt_tokens=0, warmup_first=warmup)
    assert est.waves == len(waves)
    assert est.decode_s == pytest.approx(len(waves) * 100 * 0.1)
    assert est.expected_generated_tokens == pytest.approx(100 * n)


def test_warmup_first_is_never_faster_than_all_at_once() -> None:
    model = LatencyModel(lengths=LognormalBranchLengths(mu=math.log(800), sigma=0.7))
    profile = _profile(step={1: 0.05, 8: 0.1})
    for n in (1, 2, 4, 8):
        at_once = model.predict(profile, n_branches=n, prompt_tokens=0)
        held = model.predict(profile, n_branches=n, prompt_tokens=0, warmup_first=3)
        assert held.decode_s >= at_once.decode_s - 1e-9
    with pytest.raises(ValueError, match="warmup_first"):
        model.predict(profile, n_branches=4, prompt_tokens=0, warmup_first=0)


def test_prefill_once_with_a_shared_prefix_cache_else_per_branch() -> None:
    model = LatencyModel(lengths=EmpiricalBranchLengths(samples=(1,)))
    shared = model.predict(_profile(), n_branches=4, prompt_tokens=1000)
    separate = model.predict(_profile(shared_prefix=False), n_branches=4, prompt_tokens=1000)
    assert shared.prefill_s == pytest.approx(1.0)
    assert separate.prefill_s == pytest.approx(4.0)


def test_latency_grows_with_branches_budget_and_load() -> None:
    model = LatencyModel(lengths=LognormalBranchLengths(mu=math.log(600), sigma=0.5))
    profile = _profile(step={1: 0.05, 4: 0.06, 16: 0.15})
    by_n = [model.predict(profile, n_branches=n, prompt_tokens=100).total_s for n in (1, 2, 4, 8)]
    by_budget = [
        model.predict(profile, n_branches=2, prompt_tokens=100, thinking_budget=b).total_s
        for b in (128, 256, 512, 1024)
    ]
    by_load = [
        model.predict(profile, n_branches=2, prompt_tokens=100, pool_load=load).total_s
        for load in (0, 2, 4)
    ]
    for series in (by_n, by_budget, by_load):
        assert series == sorted(series)
        assert series[0] < series[-1]


def test_speculation_divides_decode_time_by_acceptance() -> None:
    model = LatencyModel(lengths=EmpiricalBranchLengths(samples=(400,)))
    plain = model.predict(_profile(), n_branches=1, prompt_tokens=0)
    spec = model.predict(_profile(accepted=2.5), n_branches=1, prompt_tokens=0)
    assert spec.decode_s == pytest.approx(plain.decode_s / 2.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"n_branches": 0, "prompt_tokens": 1}, id="no-branches"),
        pytest.param({"n_branches": 1, "prompt_tokens": -1}, id="negative-prompt"),
        pytest.param({"n_branches": 1, "prompt_tokens": 1, "pool_load": -1}, id="negative-load"),
    ],
)
def test_predict_rejects_bad_input(kwargs: dict[str, int]) -> None:
    model = LatencyModel(lengths=EmpiricalBranchLengths(samples=(1,)))
    with pytest.raises(ValueError):
        model.predict(_profile(), **kwargs)


def test_latency_model_round_trips_with_either_length_model() -> None:
    for lengths in (
        EmpiricalBranchLengths(samples=(3, 1, 2)),
        LognormalBranchLengths(mu=6.0, sigma=0.4),
    ):
        model = LatencyModel(lengths=lengths, trim_factor=0.8)
        again = LatencyModel.model_validate_json(model.model_dump_json())
        assert again == model
        assert again.predict(_profile(), n_branches=3, prompt_tokens=10) == model.predict(
            _profile(), n_branches=3, prompt_tokens=10
        )
    with pytest.raises(ValidationError):
        LatencyModel(lengths=EmpiricalBranchLengths(samples=(1,)), finish_fraction=0.0)
