from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from pydantic import ValidationError

from policies.accuracy import (
    AccuracyEstimator,
    AccuracyModel,
    BranchSample,
    DefaultAccuracyCurve,
    ProblemSamples,
    SaturatingCurve,
)
from policies.allocator import (
    AllocationGrid,
    AllocationRequest,
    Allocator,
    SearchMethod,
    candidates_by_config,
)
from policies.latency import LatencyModel, LognormalBranchLengths
from policies.modes import ThinkingMode
from policies.profile import PoolProfile, ProfileSet, SpeculativeMethod, StepTimePoint

CONCURRENCIES = (1, 2, 4, 8, 16, 32)
GRID = AllocationGrid(n_branches=(1, 2, 4, 8, 16), thinking_budgets=(256, 1024, 2048, None))
LATENCY_BUDGETS = tuple(float(b) for b in np.geomspace(2, 2000, 8))


def _pool(
    name: str,
    steps: list[float],
    *,
    accepted: float = 1.0,
    depth: int = 0,
    slots: int = 16,
    prefill: float = 1000.0,
) -> PoolProfile:
    return PoolProfile(
        pool=name,
        engine="synthetic",
        model="m",
        speculative_method=SpeculativeMethod.DRAFT if depth else SpeculativeMethod.NONE,
        speculative_depth=depth,
        accepted_tokens_per_step=accepted,
        step_times=tuple(
            StepTimePoint(concurrency=c, step_time_s=s)
            for c, s in zip(CONCURRENCIES, steps, strict=True)
        ),
        prefill_tokens_per_s=prefill,
        max_concurrency=slots,
    )


def _synthetic_profiles(rng: np.random.Generator) -> ProfileSet:
    """A plain pool that turns compute-bound past a random batch, plus 0-2 speculative pools
    whose steps cost more and whose acceptance may or may not pay for it."""
    base = rng.uniform(0.01, 0.2)
    knee = rng.uniform(2, 32)
    slots = int(rng.choice([4, 8, 16, 32]))
    prefill = rng.uniform(100, 5000)
    plain = [base * max(1.0, c / knee) ** rng.uniform(0.6, 1.0) for c in CONCURRENCIES]
    pools = [_pool("plain", plain, slots=slots, prefill=prefill)]
    for k in range(int(rng.integers(0, 3))):
        depth = int(rng.integers(1, 8))
        accepted = 1.0 + rng.uniform(0.0, depth)
        cost = rng.uniform(1.0, 3.0)
        steps = [
            s * cost * max(1.0, c * (depth + 1) / knee / 2) ** 0.5
            for c, s in zip(CONCURRENCIES, plain, strict=True)
        ]
        pools.append(
            _pool(f"spec{k}", steps, accepted=accepted, depth=depth, slots=slots, prefill=prefill)
        )
    return ProfileSet.of(pools)


def _synthetic_latency(rng: np.random.Generator) -> LatencyModel:
    return LatencyModel(
        lengths=LognormalBranchLengths(
            mu=math.log(rng.uniform(200, 4000)), sigma=rng.uniform(0.2, 1.0)
        )
    )


def _saturating_accuracy(rng: np.random.Generator) -> AccuracyEstimator:
    a_1 = rng.uniform(0.2, 0.8)
    return DefaultAccuracyCurve(
        curves={
            ThinkingMode.SLOW: SaturatingCurve(
                a_1=a_1,
                a_inf=min(1.0, a_1 + rng.uniform(0.0, 0.3)),
                alpha=rng.uniform(0.2, 1.5),
                budget_scale_tokens=rng.uniform(200, 3000),
            )
        }
    )


def _bootstrapped_accuracy(rng: np.random.Generator) -> AccuracyEstimator:
    """Accuracy fitted from synthetic eval logs: not monotone in N everywhere."""
    records = []
    for i in range(30):
        p_correct = rng.beta(1.2, 1.0)
        wrong = rng.dirichlet(np.ones(3))
        mu = math.log(rng.uniform(300, 3000))
        samples = []
        for _ in range(12):
            correct = bool(rng.random() < p_correct)
            answer = "right" if correct else f"wrong{rng.choice(3, p=wrong)}"
            length = int(math.exp(rng.normal(mu, 0.6)))
            samples.append(BranchSample(answer=answer, correct=correct, length=length))
        records.append(ProblemSamples(problem_id=f"p{i}", samples=tuple(samples)))
    return AccuracyModel.fit(
        records, n_values=GRID.n_branches, budgets=(256, 1024, 2048), n_bootstrap=48, seed=0
    )


AccuracyFactory = Callable[[np.random.Generator], AccuracyEstimator]


def _allocators(seed: int, count: int, make_accuracy: AccuracyFactory) -> list[Allocator]:
    rng = np.random.default_rng(seed)
    return [
        Allocator(
            _synthetic_profiles(rng),
            latency=_synthetic_latency(rng),
            accuracy=make_accuracy(rng),
            grid=GRID,
        )
        for _ in range(count)
    ]


def _request(budget_s: float | None = None, **kwargs: object) -> AllocationRequest:
    return AllocationRequest(prompt_tokens=200, latency_budget_s=budget_s, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("family", "seed", "count"),
    [
        pytest.param(_saturating_accuracy, 11, 25, id="saturating-accuracy"),
        pytest.param(_bootstrapped_accuracy, 12, 8, id="bootstrapped-accuracy"),
    ],
)
def test_greedy_within_two_percent_of_exhaustive(
    family: AccuracyFactory, seed: int, count: int
) -> None:
    worst = 0.0
    for allocator in _allocators(seed, count, family):
        for budget in LATENCY_BUDGETS:
            greedy = allocator.allocate(_request(budget), search=SearchMethod.GREEDY)
            exact = allocator.allocate(_request(budget), search=SearchMethod.EXHAUSTIVE)
            assert greedy.met_constraints == exact.met_constraints
            if not exact.met_constraints:  # both take the fastest configuration instead
                continue
            g, e = greedy.chosen.predicted_accuracy, exact.chosen.predicted_accuracy
            assert g <= e + 1e-12  # the exhaustive search is the optimum
            worst = max(worst, (e - g) / max(e, 1e-9))
            # the greedy path visits a fraction of the grid
            assert len(greedy.candidates) <= len(exact.candidates)
    assert worst <= 0.02


@pytest.mark.parametrize(
    ("family", "count", "search"),
    [
        pytest.param(_saturating_accuracy, 12, SearchMethod.GREEDY, id="greedy-saturating"),
        pytest.param(_saturating_accuracy, 12, SearchMethod.EXHAUSTIVE, id="exhaustive-saturating"),
        pytest.param(
            _bootstrapped_accuracy, 6, SearchMethod.EXHAUSTIVE, id="exhaustive-bootstrapped"
        ),
    ],
)
def test_more_latency_budget_never_lowers_predicted_accuracy(
    family: AccuracyFactory, count: int, search: SearchMethod
) -> None:
    for allocator in _allocators(21, count, family):
        accuracies = [
            allocator.allocate(_request(b), search=search).chosen.predicted_accuracy
            for b in LATENCY_BUDGETS
        ]
        assert accuracies == sorted(accuracies)


@pytest.mark.parametrize("search", list(SearchMethod))
def test_never_over_budget_by_prediction(search: SearchMethod) -> None:
    for allocator in _allocators(31, 10, _saturating_accuracy):
        for budget in LATENCY_BUDGETS:
            decision = allocator.allocate(_request(budget), search=search)
            if decision.met_constraints:
                assert decision.chosen.predicted_latency_s <= budget
                assert decision.chosen.feasible
            for c in decision.candidates:
                assert c.feasible == (c.predicted_latency_s <= budget)


@pytest.mark.parametrize("search", list(SearchMethod))
def test_nothing_fits_picks_the_fastest_and_flags_it(search: SearchMethod) -> None:
    allocator = _allocators(41, 1, _saturating_accuracy)[0]
    decision = allocator.allocate(_request(1e-6), search=search)
    everything = allocator.allocate(_request(1e-6), search=SearchMethod.EXHAUSTIVE)
    fastest = min(c.predicted_latency_s for c in everything.candidates)
    assert not decision.met_constraints
    assert not decision.chosen.feasible
    assert decision.chosen.predicted_latency_s == pytest.approx(fastest)
    assert "NOTHING MEETS THE CONSTRAINTS" in decision.explanation


# Hardware honesty: measured on the 2-core CPU, a 0.5B draft for a 1.5B target decoded at
# x0.55-0.74 of plain speed; on a GPU-like profile the same acceptance pays.
CPU_PLAIN = [0.06, 0.07, 0.09, 0.15, 0.28, 0.55]
CPU_DRAFT = [s * 2.8 for s in CPU_PLAIN]  # accepted 1.8 tokens per step: x0.64
GPU_PLAIN = [0.02, 0.02, 0.021, 0.022, 0.025, 0.03]
GPU_DRAFT = [s * 1.3 for s in GPU_PLAIN]  # accepted 2.6 tokens per step: x2.0


@pytest.mark.parametrize(
    ("plain", "draft", "expected_method"),
    [
        pytest.param(CPU_PLAIN, CPU_DRAFT, SpeculativeMethod.NONE, id="cpu-speculation-slower"),
        pytest.param(GPU_PLAIN, GPU_DRAFT, SpeculativeMethod.DRAFT, id="gpu-speculation-pays"),
    ],
)
@pytest.mark.parametrize("search", list(SearchMethod))
def test_speculation_only_where_the_profile_says_it_pays(
    plain: list[float], draft: list[float], expected_method: SpeculativeMethod, search: SearchMethod
) -> None:
    accepted = 1.8 if draft is CPU_DRAFT else 2.6
    profiles = ProfileSet.of(
        [_pool("plain", plain), _pool("draft", draft, accepted=accepted, depth=4)]
    )
    allocator = Allocator(
        profiles,
        latency=LatencyModel(lengths=LognormalBranchLengths(mu=math.log(600), sigma=0.5)),
        accuracy=DefaultAccuracyCurve(),
        grid=GRID,
    )
    for budget in (20.0, 60.0, 300.0):
        decision = allocator.allocate(_request(budget), search=search)
        assert decision.met_constraints
        assert decision.chosen.speculative_method is expected_method
        assert "decodes at x" in decision.explanation


def _fixed_allocator() -> Allocator:
    profiles = ProfileSet.of(
        [_pool("plain", CPU_PLAIN), _pool("draft", CPU_DRAFT, accepted=1.8, depth=4)]
    )
    return Allocator(
        profiles,
        latency=LatencyModel(lengths=LognormalBranchLengths(mu=math.log(600), sigma=0.5)),
        accuracy=DefaultAccuracyCurve(),
        grid=GRID,
    )


@pytest.mark.parametrize("search", list(SearchMethod))
@pytest.mark.parametrize(
    ("budget_s", "n_branches", "met"),
    [
        pytest.param(1000.0, 2, True, id="fits-though-more-would"),
        pytest.param(5.0, 16, False, id="over-budget-still-honoured"),
    ],
)
def test_the_users_explicit_n_wins(
    search: SearchMethod, budget_s: float, n_branches: int, met: bool
) -> None:
    decision = _fixed_allocator().allocate(_request(budget_s, n_branches=n_branches), search=search)
    assert decision.chosen.n_branches == n_branches
    assert {c.n_branches for c in decision.candidates} == {n_branches}
    assert decision.met_constraints is met
    assert "N fixed by the request" in decision.explanation


@pytest.mark.parametrize("search", list(SearchMethod))
@pytest.mark.parametrize("target", [0.3, 0.45, 0.55, 0.6])
def test_target_accuracy_at_minimum_latency(search: SearchMethod, target: float) -> None:
    allocator = _fixed_allocator()
    decision = allocator.allocate(_request(target_accuracy=target), search=search)
    exhaustive = allocator.allocate(
        _request(target_accuracy=target), search=SearchMethod.EXHAUSTIVE
    )
    reaching = [c for c in exhaustive.candidates if c.predicted_accuracy >= target]
    assert decision.met_constraints
    assert decision.chosen.predicted_accuracy >= target
    assert decision.chosen.predicted_latency_s == pytest.approx(
        min(c.predicted_latency_s for c in reaching)
    )


def test_unreachable_target_returns_the_most_accurate_and_flags_it() -> None:
    decision = _fixed_allocator().allocate(_request(target_accuracy=0.99))
    assert not decision.met_constraints
    best = DefaultAccuracyCurve().accuracy(16)
    assert decision.chosen.predicted_accuracy == pytest.approx(best)


def test_max_tokens_collapses_budgets_at_or_above_it() -> None:
    decision = _fixed_allocator().allocate(
        _request(10_000.0, max_tokens=1500), search=SearchMethod.EXHAUSTIVE
    )
    assert {c.thinking_budget for c in decision.candidates} == {256, 1024, None}
    unlimited = candidates_by_config(decision)[("plain", 1, None)]
    # capped by max_tokens, so accuracy is that of a 1500-token budget
    assert unlimited.predicted_accuracy == pytest.approx(
        DefaultAccuracyCurve().accuracy(1, thinking_budget=1500)
    )


def test_candidate_table_explains_every_row() -> None:
    decision = _fixed_allocator().allocate(_request(30.0), search=SearchMethod.EXHAUSTIVE)
    by_config = candidates_by_config(decision)
    chosen = decision.chosen
    assert chosen.why == "chosen"
    assert decision.table()[0]["why"] == "chosen"
    for config, c in by_config.items():
        if config == (chosen.pool, chosen.n_branches, chosen.thinking_budget):
            continue
        if not c.feasible:
            assert c.why.startswith("over the latency budget by")
        elif c.pool == "draft":
            assert c.why == "pool plain is faster for the same N and budget"
        else:
            assert c.predicted_accuracy <= chosen.predicted_accuracy
    assert len(by_config) == 2 * len(GRID.n_branches) * len(GRID.thinking_budgets)


def test_greedy_path_is_recorded_and_starts_at_the_cheapest() -> None:
    decision = _fixed_allocator().allocate(_request(60.0))
    path = decision.greedy_path
    assert path[0].n_branches == 1
    assert path[0].thinking_budget == 256
    assert decision.chosen in path


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="no-objective"),
        pytest.param({"latency_budget_s": 0.0}, id="zero-budget"),
        pytest.param({"latency_budget_s": 1.0, "n_branches": 0}, id="zero-branches"),
    ],
)
def test_request_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AllocationRequest(prompt_tokens=1, **kwargs)  # type: ignore[arg-type]


def test_pool_load_can_move_the_choice_to_another_pool() -> None:
    twins = ProfileSet.of([_pool("a", GPU_PLAIN), _pool("b", [s * 1.05 for s in GPU_PLAIN])])
    allocator = Allocator(
        twins,
        latency=LatencyModel(lengths=LognormalBranchLengths(mu=math.log(600), sigma=0.5)),
        accuracy=DefaultAccuracyCurve(),
        grid=GRID,
    )
    assert allocator.allocate(_request(100.0)).chosen.pool == "a"
    assert allocator.allocate(_request(100.0, pool_loads={"a": 30})).chosen.pool == "b"
