"""Allocator: choose (pool, branches N, thinking budget) for one request.

Objectives: with a ``latency_budget_s``, the highest predicted accuracy whose predicted latency
fits; with a ``target_accuracy``, the lowest predicted latency that reaches it (within the latency
budget when both are given). A user's explicit ``n_branches`` fixes N. When nothing fits, the
fastest configuration is returned and the decision says it is over budget.

Pools serve the same target model with different speculative decoding, and speculation is
lossless, so the pool changes latency but not accuracy: for every (N, budget) the allocator uses
the pool predicted fastest. That is where the hardware's honesty comes in — a speculative pool
whose measured acceptance does not pay for its slower steps is simply never the fastest.

Two searches over the (N, budget) grid:

* **exhaustive** — every (pool, N, budget); the reference.
* **greedy** — after the seed paper (arXiv:2505.19634), which grows concurrency step by step
  from the cheapest configuration while the latency stays within the budget: start at the
  smallest N and thinking budget, add branches while the next N still fits; then raise the
  thinking budget one grid step, shed branches until it fits again, add branches while they fit,
  and so on (a walk along the boundary of what fits, O(#N + #budgets) cells). The most accurate
  visited cell that fits wins. With a target accuracy the walk keeps, per thinking budget, the
  fewest branches that reach it. Because latency grows with N and with the budget, the walk
  finds every budget's largest N that fits; when accuracy also grows with N it equals the
  exhaustive answer, and it is then monotone in the latency budget. The exhaustive search is
  monotone unconditionally (a larger budget only adds feasible cells).

One allocator serves one thinking mode: fast mode has its own branch-length distribution (build
its :class:`LatencyModel` from fast-mode lengths) and a grid whose thinking budgets are ``(None,)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from policies.accuracy import AccuracyEstimator
from policies.latency import LatencyModel
from policies.modes import ThinkingMode
from policies.profile import PoolProfile, ProfileSet, SpeculativeMethod

_GAIN_EPS = 1e-9


class SearchMethod(StrEnum):
    GREEDY = "greedy"
    EXHAUSTIVE = "exhaustive"


class Objective(StrEnum):
    MAX_ACCURACY_WITHIN_LATENCY = "max_accuracy_within_latency"
    MIN_LATENCY_FOR_ACCURACY = "min_latency_for_accuracy"


def _budget_key(budget: int | None) -> float:
    return math.inf if budget is None else float(budget)


class AllocationGrid(BaseModel):
    """The configurations the allocator may choose from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_branches: tuple[int, ...] = Field(default=(1, 2, 4, 8, 16), min_length=1)
    thinking_budgets: tuple[int | None, ...] = Field(
        default=(None,), min_length=1, description="Thinking budgets in tokens; None: unlimited."
    )
    pools: tuple[str, ...] | None = Field(
        default=None, description="Pools to consider (None: all)."
    )

    @field_validator("n_branches")
    @classmethod
    def _sorted_n(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if min(values) < 1:
            raise ValueError("n_branches must be >= 1")
        return tuple(sorted(set(values)))

    @field_validator("thinking_budgets")
    @classmethod
    def _sorted_budgets(cls, values: tuple[int | None, ...]) -> tuple[int | None, ...]:
        if any(v is not None and v < 0 for v in values):
            raise ValueError("thinking budgets must be >= 0")
        return tuple(sorted(set(values), key=_budget_key))


class AllocationRequest(BaseModel):
    """What the allocator knows about one request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = Field(..., ge=0)
    latency_budget_s: float | None = Field(default=None, gt=0)
    target_accuracy: float | None = Field(default=None, gt=0, le=1)
    n_branches: int | None = Field(default=None, ge=1, description="The user's explicit N (wins).")
    mode: ThinkingMode = ThinkingMode.SLOW
    dataset: str | None = None
    difficulty: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    pool_loads: dict[str, int] = Field(default_factory=dict, description="Running sequences.")
    warmup_first: int | None = Field(
        default=None,
        ge=1,
        description="Branches that run alone before the others start (a confidence early stop "
        "in DeepConf-online's order).",
    )

    @model_validator(mode="after")
    def _has_objective(self) -> AllocationRequest:
        if self.latency_budget_s is None and self.target_accuracy is None:
            raise ValueError("give latency_budget_s or target_accuracy")
        return self

    @property
    def objective(self) -> Objective:
        if self.target_accuracy is not None:
            return Objective.MIN_LATENCY_FOR_ACCURACY
        return Objective.MAX_ACCURACY_WITHIN_LATENCY

    def fits(self, latency_s: float) -> bool:
        return self.latency_budget_s is None or latency_s <= self.latency_budget_s


class Candidate(BaseModel):
    """One evaluated configuration and why it was or was not chosen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool: str
    speculative_method: SpeculativeMethod
    speculative_depth: int
    n_branches: int
    thinking_budget: int | None
    predicted_latency_s: float
    predicted_accuracy: float
    expected_generated_tokens: float
    feasible: bool = Field(..., description="Predicted latency within the latency budget.")
    why: str = ""


class AllocationDecision(BaseModel):
    """The chosen configuration plus the table it was chosen from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chosen: Candidate
    objective: Objective
    search: SearchMethod
    met_constraints: bool = Field(..., description="False: nothing fit; the fastest was taken.")
    explanation: str
    candidates: tuple[Candidate, ...]
    greedy_path: tuple[Candidate, ...] = ()

    def table(self) -> list[dict[str, object]]:
        """Rows for a printed decision table (the chosen row first)."""
        rows = sorted(self.candidates, key=lambda c: (c != self.chosen, c.predicted_latency_s))
        return [c.model_dump() for c in rows]


_Config = tuple[str, int, int | None]


class Allocator:
    """Chooses (pool, N, thinking budget) from profiles, a latency model and an accuracy model."""

    def __init__(
        self,
        profiles: ProfileSet,
        *,
        latency: LatencyModel,
        accuracy: AccuracyEstimator,
        grid: AllocationGrid | None = None,
        search: SearchMethod = SearchMethod.GREEDY,
    ) -> None:
        self.grid = grid or AllocationGrid()
        names = self.grid.pools if self.grid.pools is not None else tuple(profiles.pools)
        self._profiles: dict[str, PoolProfile] = {name: profiles.get(name) for name in names}
        if not self._profiles:
            raise ValueError("the allocator needs at least one pool profile")
        self.latency = latency
        self.accuracy = accuracy
        self.search = search

    def allocate(
        self, request: AllocationRequest, *, search: SearchMethod | None = None
    ) -> AllocationDecision:
        method = search or self.search
        evaluate = _Evaluator(self, request)
        n_values = (request.n_branches,) if request.n_branches else self.grid.n_branches
        budgets = self._budgets(request)
        path: list[Candidate] = []
        if method is SearchMethod.EXHAUSTIVE:
            pool_names = sorted(self._profiles)
            considered = [
                evaluate((p, n, b)) for p in pool_names for n in n_values for b in budgets
            ]
        else:
            if request.latency_budget_s is not None:
                path += _budget_walk(evaluate.best_pool, n_values, budgets, _fits(request))
            if request.target_accuracy is not None:
                path += _target_walk(
                    evaluate.best_pool, n_values, budgets, request.target_accuracy - _GAIN_EPS
                )
            path = list({_key(c): c for c in path}.values())
            considered = path
        chosen, met = _choose(considered, request)
        table = _annotate(evaluate.all(), chosen, request, evaluate.fastest_pool)
        chosen = next(c for c in table if _key(c) == _key(chosen))
        return AllocationDecision(
            chosen=chosen,
            objective=request.objective,
            search=method,
            met_constraints=met,
            explanation=self._explain(chosen, request, met=met, method=method),
            candidates=tuple(table),
            greedy_path=tuple(next(c for c in table if _key(c) == _key(p)) for p in path),
        )

    def _budgets(self, request: AllocationRequest) -> tuple[int | None, ...]:
        if request.max_tokens is None:
            return self.grid.thinking_budgets
        # Budgets at or above max_tokens all behave like max_tokens: keep one of them.
        kept = [b for b in self.grid.thinking_budgets if b is not None and b < request.max_tokens]
        return (*kept, None) if len(kept) < len(self.grid.thinking_budgets) else tuple(kept)

    def predict(self, config: _Config, request: AllocationRequest) -> Candidate:
        pool, n, budget = config
        profile = self._profiles[pool]
        estimate = self.latency.predict(
            profile,
            n_branches=n,
            prompt_tokens=request.prompt_tokens,
            thinking_budget=budget,
            max_tokens=request.max_tokens,
            pool_load=request.pool_loads.get(pool, 0),
            warmup_first=request.warmup_first,
        )
        accuracy = self.accuracy.accuracy(
            n,
            mode=request.mode,
            # max_tokens cuts a branch just like a thinking budget does
            thinking_budget=budget if budget is not None else request.max_tokens,
            dataset=request.dataset,
            difficulty=request.difficulty,
        )
        return Candidate(
            pool=pool,
            speculative_method=profile.speculative_method,
            speculative_depth=profile.speculative_depth,
            n_branches=n,
            thinking_budget=budget,
            predicted_latency_s=estimate.total_s,
            predicted_accuracy=accuracy,
            expected_generated_tokens=estimate.expected_generated_tokens,
            feasible=request.fits(estimate.total_s),
        )

    @property
    def pools(self) -> tuple[str, ...]:
        return tuple(sorted(self._profiles))

    def _explain(
        self, chosen: Candidate, request: AllocationRequest, *, met: bool, method: SearchMethod
    ) -> str:
        budget = "unlimited" if chosen.thinking_budget is None else str(chosen.thinking_budget)
        parts = [
            f"{method.value}: pool {chosen.pool} ({chosen.speculative_method.value}), "
            f"N={chosen.n_branches}, thinking budget {budget}: predicted accuracy "
            f"{chosen.predicted_accuracy:.3f} in {chosen.predicted_latency_s:.2f} s"
        ]
        if request.latency_budget_s is not None:
            parts.append(f"latency budget {request.latency_budget_s:.2f} s")
        if request.target_accuracy is not None:
            parts.append(f"target accuracy {request.target_accuracy:.3f}")
        if request.n_branches is not None:
            parts.append("N fixed by the request")
        if not met:
            parts.append("NOTHING MEETS THE CONSTRAINTS: fastest configuration taken")
        parts.extend(self._speculation_notes(chosen, request))
        return "; ".join(parts)

    def _speculation_notes(self, chosen: Candidate, request: AllocationRequest) -> list[str]:
        chosen_profile = self._profiles[chosen.pool]
        load = request.pool_loads.get(chosen.pool, 0)
        notes = []
        for name, profile in sorted(self._profiles.items()):
            if name == chosen.pool or profile.speculates == chosen_profile.speculates:
                continue
            other_load = request.pool_loads.get(name, 0)
            speed = profile.decode_tokens_per_s(other_load + chosen.n_branches)
            ratio = speed / chosen_profile.decode_tokens_per_s(load + chosen.n_branches)
            kind = "speculative" if profile.speculates else "plain"
            notes.append(f"{kind} pool {name} decodes at x{ratio:.2f} the chosen pool's speed")
        return notes


class _Evaluator:
    """Memoised predictions for one request."""

    def __init__(self, allocator: Allocator, request: AllocationRequest) -> None:
        self._allocator = allocator
        self._request = request
        self._cache: dict[_Config, Candidate] = {}

    def __call__(self, config: _Config) -> Candidate:
        if config not in self._cache:
            self._cache[config] = self._allocator.predict(config, self._request)
        return self._cache[config]

    def best_pool(self, n: int, budget: int | None) -> Candidate:
        """The fastest pool for (n, budget); ties prefer no speculation, then the name."""
        options = [self((pool, n, budget)) for pool in self._allocator.pools]
        return min(options, key=_speed_rank)

    def fastest_pool(self, n: int, budget: int | None) -> str:
        return self.best_pool(n, budget).pool

    def all(self) -> list[Candidate]:
        return list(self._cache.values())


def _speed_rank(c: Candidate) -> tuple[float, bool, str]:
    """Faster first; latencies equal to 9 digits tie, and ties prefer no speculation."""
    latency = float(f"{c.predicted_latency_s:.9g}")
    return (latency, c.speculative_method is not SpeculativeMethod.NONE, c.pool)


def _fastest_rank(c: Candidate) -> tuple[float, float, bool, str, int]:
    """Faster first; among equally fast configurations the more accurate, then fewer N."""
    latency, speculates, pool = _speed_rank(c)
    return (latency, -c.predicted_accuracy, speculates, pool, c.n_branches)


def _key(c: Candidate) -> _Config:
    return (c.pool, c.n_branches, c.thinking_budget)


def _fits(request: AllocationRequest) -> Callable[[Candidate], bool]:
    return lambda c: request.fits(c.predicted_latency_s)


def _budget_walk(
    best: Callable[[int, int | None], Candidate],
    n_values: tuple[int, ...],
    budgets: tuple[int | None, ...],
    fits: Callable[[Candidate], bool],
) -> list[Candidate]:
    """Staircase walk of the latency budget's boundary (see the module docstring)."""
    visited: list[Candidate] = []
    i = 0
    for budget in budgets:
        here = best(n_values[i], budget)
        visited.append(here)
        while not fits(here) and i > 0:  # shed branches until the larger budget fits
            i -= 1
            here = best(n_values[i], budget)
            visited.append(here)
        if not fits(here):  # one branch is over: every larger budget is slower still
            break
        while i + 1 < len(n_values):  # grow branches while the next one fits
            step = best(n_values[i + 1], budget)
            visited.append(step)
            if not fits(step):
                break
            i += 1
    return visited


def _target_walk(
    best: Callable[[int, int | None], Candidate],
    n_values: tuple[int, ...],
    budgets: tuple[int | None, ...],
    target: float,
) -> list[Candidate]:
    """Per budget, the fewest branches that reach ``target``, found by moving from the last."""
    visited: list[Candidate] = []
    i = 0
    for budget in budgets:
        here = best(n_values[i], budget)
        visited.append(here)
        if here.predicted_accuracy >= target:
            while i > 0:  # drop branches while the target still holds
                fewer = best(n_values[i - 1], budget)
                visited.append(fewer)
                if fewer.predicted_accuracy < target:
                    break
                i -= 1
        else:
            while i + 1 < len(n_values) and here.predicted_accuracy < target:
                i += 1
                here = best(n_values[i], budget)
                visited.append(here)
    return visited


def _choose(considered: list[Candidate], request: AllocationRequest) -> tuple[Candidate, bool]:
    """Apply the objective to the considered candidates; (choice, constraints met)."""
    feasible = [c for c in considered if request.fits(c.predicted_latency_s)]
    fastest = min(considered, key=_fastest_rank)
    target = request.target_accuracy
    if target is not None:
        reaching = [c for c in feasible if c.predicted_accuracy >= target - _GAIN_EPS]
        if reaching:
            return min(reaching, key=_fastest_rank), True
    if not feasible:
        return fastest, False
    best = max(
        feasible,
        key=lambda c: (c.predicted_accuracy, -c.predicted_latency_s, -c.n_branches),
    )
    return best, target is None


def _annotate(
    table: list[Candidate],
    chosen: Candidate,
    request: AllocationRequest,
    fastest_pool: Callable[[int, int | None], str],
) -> list[Candidate]:
    """Attach a one-line reason to every evaluated candidate."""
    out = []
    for c in sorted(table, key=lambda c: (c.predicted_latency_s, c.pool)):
        if _key(c) == _key(chosen):
            why = "chosen"
        elif not c.feasible and request.latency_budget_s is not None:
            excess = c.predicted_latency_s - request.latency_budget_s
            why = f"over the latency budget by {excess:.2f} s"
        elif fastest_pool(c.n_branches, c.thinking_budget) != c.pool:
            why = (
                f"pool {fastest_pool(c.n_branches, c.thinking_budget)} is faster "
                "for the same N and budget"
            )
        elif request.target_accuracy is not None and c.predicted_accuracy < request.target_accuracy:
            why = "below the target accuracy"
        elif c.predicted_accuracy <= chosen.predicted_accuracy:
            why = "fits, but no more accurate than the chosen one"
        elif request.target_accuracy is not None:
            why = "more accurate, but the target is reached faster"
        else:
            why = "more accurate, but not on the search's path"
        out.append(c.model_copy(update={"why": why}))
    return out


def candidates_by_config(decision: AllocationDecision) -> Mapping[_Config, Candidate]:
    """Index a decision's table by (pool, N, budget)."""
    return {_key(c): c for c in decision.candidates}
