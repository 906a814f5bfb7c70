"""Simulated requests over banks of recorded traces, run through the product's own code.

Read before trusting a number:

* **Banks.** Records load through the one trace model (`verifiers.traces`) and are grouped per
  problem (`problem_id` for the MiP files, so their four models form one ensemble per problem;
  eight samples per problem in the 100×8 bank). A request's N branches are N distinct records of
  its problem's group, drawn without replacement; a problem whose group is smaller than N is left
  out, never padded (the result states the group sizes and how many problems were left out).
* **Branches** (`evals.sim_branches`): TrimR trimming is `verifiers.trim_replay.replay_trace`
  (segmenter, rule judge, controller, verdict delay) - the function ``trim-replay`` runs; a
  thinking budget cuts where the service's presenter does; answers are extracted from the text as
  the service does. Tokens are real Qwen2.5 tokens (`verifiers.traces.TokenCounter`).
* **Votes and early stop** are `tts_orchestrator.request.consensus.Consensus` - the request's
  own vote and early-stop rule objects (`build_rule`: the requested rule, plus SafeLead for
  majority) - fed the branches in simulated finish order, clustering with math-verify
  equivalence. One branch is answered without a vote, as the service's single presenter does.
* **Time** comes from a pool profile (`policies.profile.PoolProfile`): at most
  ``max_concurrency`` branches decode at once (the rest wait for a slot), each at the profile's
  per-sequence rate for the current concurrency; latency = prefill + time until the vote is
  decided (early stop cancels the rest) or the last branch ends.
* **Grading** happens after every decision: the winning answer against the ground truth
  (math-verify). Ground truth, the source's final answer and its correctness label steer nothing
  (tests shuffle them and compare decisions).
"""

from __future__ import annotations

import zlib
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evals.records import SampleRecord
from evals.sim_branches import BranchBank, BranchCut, BranchOutcome
from policies.profile import PoolProfile, ProfileSet
from tts_orchestrator.config.planning import PlannerSettings
from tts_orchestrator.planning.planner import Planner, PlanRequest
from tts_orchestrator.protocol import TtsOptions
from tts_orchestrator.request.consensus import Consensus
from verifiers.equivalence import EquivalenceChecker
from verifiers.judges import AnswerComparer, RuleJudge
from verifiers.traces import ProblemGroup, TokenCounter, group_by_problem, load_traces
from verifiers.trimr import TrimRConfig

__all__ = [
    "PROFILES_DIR",
    "SimulatedRequest",
    "SimulationLab",
    "SimulationModel",
    "SimulationResult",
    "decode_schedule",
    "load_profile",
    "load_profiles",
    "simulate",
]

PROFILES_DIR = Path(__file__).resolve().parent / "data" / "profiles"
# Reference (roofline) profiles live beside the policies, when that package ships them.
_PROFILE_DIRS = (PROFILES_DIR, Path(__file__).resolve().parents[1] / "policies/data/profiles")
_EPS = 1e-9


class SimulationModel(BaseModel):
    """Serving assumptions of a simulation (the profile holds the measured costs)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: str = Field(default="cpu", description="Profile name (evals/data/profiles) or path.")
    pool: str | None = Field(default=None, description="None: the request's pool, else the first.")
    prompt_overhead_tokens: int = Field(
        default=24, ge=0, description="Chat-template tokens around the problem text."
    )
    samples: int = Field(default=1, ge=1, description="Simulated requests per problem.")
    seed: int = Field(default=0, description="Seeds the branch draw per problem and sample.")
    planner: PlannerSettings = Field(
        default_factory=PlannerSettings,
        description="The service's planner settings, for requests with a latency budget.",
    )


def load_profiles(name: str) -> ProfileSet:
    """A `ProfileSet` JSON: a path, or a name under `PROFILES_DIR` / `policies/data/profiles`."""
    candidates = [Path(name), *(d / f"{name}.json" for d in _PROFILE_DIRS)]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        known = sorted(p.stem for d in _PROFILE_DIRS for p in d.glob("*.json"))
        raise ValueError(f"no profile {name!r}: give a ProfileSet JSON path or one of {known}")
    return ProfileSet.load(path)


def load_profile(name: str, *, pool: str | None = None) -> PoolProfile:
    """One pool of `load_profiles(name)` (the first when `pool` is None)."""
    profiles = load_profiles(name)
    return profiles.get(pool) if pool is not None else profiles.profiles[0]


def decode_schedule(
    lengths: Sequence[int], profile: PoolProfile, *, until: float | None = None
) -> tuple[list[float], list[float]]:
    """(finish time of each branch, tokens each has generated by ``until``; all if None).

    Branches start in index order; at most ``profile.max_concurrency`` decode at once and each
    gains ``profile.decode_tokens_per_s(c)`` tokens per second while ``c`` decode.
    """
    n = len(lengths)
    finish, produced = [float("inf")] * n, [0.0] * n
    waiting, running = deque(range(n)), set[int]()
    now = 0.0

    def fill() -> None:
        while waiting and len(running) < profile.max_concurrency:
            running.add(waiting.popleft())

    fill()
    while running:
        rate = profile.decode_tokens_per_s(len(running))
        step = min((lengths[i] - produced[i]) / rate for i in running)
        if until is not None and now + step >= until:
            for i in running:
                produced[i] += rate * (until - now)
            break
        now += step
        for i in list(running):
            produced[i] += rate * step
            if produced[i] >= lengths[i] - _EPS:
                produced[i], finish[i] = float(lengths[i]), now
                running.discard(i)
        fill()
    return finish, produced


class SimulatedRequest(BaseModel):
    """One simulated request: what was decided, what it cost, and (after) whether it was right."""

    problem_key: str
    sample: int
    gold: str = Field(description="Ground truth: grading only.")
    group_size: int
    pool: str
    n_branches: int
    thinking_budget: int | None
    planned: bool = Field(default=False, description="N, pool and budget chosen by the planner.")
    branch_ids: list[str] = Field(description="The drawn records, in branch order.")
    cuts: list[BranchCut]
    answers: list[str | None] = Field(description="Each branch's reported answer.")
    stopped_early: bool
    stop_reason: str
    answer: str | None
    latency_s: float
    thinking_tokens: int = Field(description="Thinking tokens generated (early stop counted).")
    answer_tokens: int
    branch_thinking_tokens: int = Field(description="Thinking tokens of the drawn branches.")
    recorded_thinking_tokens: int = Field(description="The same, as recorded (uncut).")
    trim_saved_tokens: int = Field(description="Thinking tokens the TrimR cuts removed.")
    correct: bool = Field(description="Graded after every decision (ground truth).")

    def decisions(self) -> tuple[object, ...]:
        """Everything the request decided (the shuffle test compares these)."""
        return (
            self.pool,
            self.n_branches,
            self.thinking_budget,
            self.branch_ids,
            self.cuts,
            self.answers,
            self.stopped_early,
            self.stop_reason,
            self.answer,
            round(self.latency_s, 9),
            self.thinking_tokens,
            self.answer_tokens,
        )


class SimulationResult(BaseModel):
    tokenizer: str
    profile: str
    pool: str
    tts: dict[str, object]
    problems: int
    problems_left_out: int = Field(description="Problems whose group is smaller than N.")
    group_sizes: dict[int, int] = Field(description="Group size -> problems simulated.")
    accuracy: float
    mean_latency_s: float
    thinking_tokens: int = Field(description="Thinking tokens generated over every request.")
    mean_thinking_tokens: float
    trim_saved_fraction: float = Field(
        description="Share of the drawn branches' recorded thinking tokens removed by TrimR."
    )
    requests: list[SimulatedRequest]

    def records(self, model: str = "") -> list[SampleRecord]:
        """Eval-runner records (for sweeps and metrics)."""
        return [
            SampleRecord(
                problem_id=r.problem_key,
                sample_index=r.sample,
                gold=r.gold,
                answer=r.answer,
                correct=r.correct,
                latency_s=r.latency_s,
                thinking_tokens=r.thinking_tokens,
                answer_tokens=r.answer_tokens,
                tokens_estimated=False,
                model=model or None,
                tts={"simulated": True, **self.tts},
            )
            for r in self.requests
        ]


def _check_supported(tts: TtsOptions) -> None:
    if tts.aggregation == "weighted":
        raise ValueError("weighted votes need logprobs, which the recorded traces do not carry")
    if tts.uses_confidence:
        raise ValueError(
            "confidence options need per-token logprobs, which the recorded traces do not carry; "
            "replay a bank recorded with logprobs: `python -m benchmarks.deepconf --bank ...`"
        )
    if tts.mode is not None and tts.mode.value != "slow":
        raise ValueError(
            f"mode={tts.mode.value} cannot be replayed from slow-thinking traces; "
            "simulate a no-thinking bank (e.g. Qwen2.5-32B-Instruct) instead"
        )


def _planned(
    tts: TtsOptions, planner: Planner, *, prompt_tokens: int, max_branches: int
) -> TtsOptions:
    """The request's tts after the service's planner chose pool, N and thinking budget (as the
    orchestrator applies a plan: an explicit thinking budget wins)."""
    plan = planner.plan(
        PlanRequest(
            model=planner.profiles.profiles[0].model,
            prompt_tokens=prompt_tokens,
            latency_budget_s=tts.latency_budget_s,
            max_branches=max_branches,
            pool=tts.pool,
        )
    )
    update: dict[str, object] = {"n_branches": plan.n_branches, "pool": plan.pool}
    if tts.thinking_budget is None and plan.thinking_budget is not None:
        update["thinking_budget"] = plan.thinking_budget
    return tts.model_copy(update=update)


async def _request(
    group: ProblemGroup,
    sample: int,
    *,
    tts: TtsOptions,
    bank: BranchBank,
    profiles: ProfileSet,
    planner: Planner | None,
    model: SimulationModel,
    checker: AnswerComparer,
) -> SimulatedRequest:
    prompt = bank.counter.count(group.problem) + model.prompt_overhead_tokens
    planned = planner is not None
    if planner is not None:
        tts = _planned(tts, planner, prompt_tokens=prompt, max_branches=group.size)
    n = tts.n_branches or 1
    profile = profiles.get(tts.pool) if tts.pool else profiles.profiles[0]
    rng = np.random.default_rng([model.seed, zlib.crc32(group.key.encode()), sample])
    picks = [int(i) for i in rng.choice(group.size, size=n, replace=False)]
    traces = [group.traces[i] for i in picks]
    trim = bool(tts.trim)
    outcomes: list[BranchOutcome] = [
        await bank.play(t, trim=trim, budget=tts.thinking_budget) for t in traces
    ]
    finish, _ = decode_schedule([o.tokens for o in outcomes], profile)
    order = sorted(range(n), key=lambda i: (finish[i], i))
    stop_at, stopped, reason = finish[order[-1]], False, "every branch finished"
    if n == 1:
        answer = outcomes[0].answer
    else:
        consensus = Consensus(tts, n_branches=n, equivalent=checker.equivalent)
        for i in order:
            decision = await consensus.add(branch=i, answer=outcomes[i].answer, mean_logprob=None)
            if decision.stop:
                stop_at, stopped, reason = finish[i], True, decision.reason
                break
        answer = consensus.vote().winner
    _, produced = decode_schedule([o.tokens for o in outcomes], profile, until=stop_at)
    spent = [round(p) for p in produced]
    thinking = sum(min(o.thinking_tokens, s) for o, s in zip(outcomes, spent, strict=True))
    prefills = 1 if profile.prefix_cache_shared else n
    return SimulatedRequest(
        problem_key=group.key,
        sample=sample,
        gold=group.ground_truth,
        group_size=group.size,
        pool=profile.pool,
        n_branches=n,
        thinking_budget=tts.thinking_budget,
        planned=planned,
        branch_ids=[f"{t.model}:{t.id}" for t in traces],
        cuts=[o.cut for o in outcomes],
        answers=[o.answer for o in outcomes],
        stopped_early=stopped,
        stop_reason=reason,
        answer=answer,
        latency_s=profile.prefill_time_s(prompt * prefills) + stop_at,
        thinking_tokens=thinking,
        answer_tokens=sum(spent) - thinking,
        branch_thinking_tokens=sum(o.thinking_tokens for o in outcomes),
        recorded_thinking_tokens=sum(o.recorded_thinking_tokens for o in outcomes),
        trim_saved_tokens=sum(
            o.recorded_thinking_tokens - o.thinking_tokens
            for o in outcomes
            if o.cut is BranchCut.TRIM
        ),
        correct=answer is not None and await checker.equivalent(group.ground_truth, answer),
    )


async def simulate(
    groups: Sequence[ProblemGroup],
    tts: TtsOptions,
    *,
    bank: BranchBank,
    checker: AnswerComparer,
    model: SimulationModel | None = None,
) -> SimulationResult:
    """Every problem whose group holds at least N records, ``model.samples`` times each."""
    model = model or SimulationModel()
    _check_supported(tts)
    profiles = load_profiles(model.profile)
    pool = model.pool or tts.pool
    if pool is not None:
        tts = tts.model_copy(update={"pool": profiles.get(pool).pool})
    planned = tts.latency_budget_s is not None and tts.n_branches is None
    # The planner caps N at the group (max_branches); a fixed N leaves smaller groups out.
    kept = [g for g in groups if planned or g.size >= (tts.n_branches or 1)]
    bank.prepare([t for g in kept for t in g.traces])
    planner = Planner(profiles, settings=model.planner) if planned else None
    requests = [
        await _request(
            g,
            s,
            tts=tts,
            bank=bank,
            profiles=profiles,
            planner=planner,
            model=model,
            checker=checker,
        )
        for g in kept
        for s in range(model.samples)
    ]
    recorded = sum(r.recorded_thinking_tokens for r in requests)
    count = len(requests) or 1
    return SimulationResult(
        tokenizer=bank.counter.name,
        profile=model.profile,
        pool=", ".join(sorted({r.pool for r in requests})),
        tts=tts.model_dump(mode="json", exclude_none=True),
        problems=len(kept),
        problems_left_out=len(groups) - len(kept),
        group_sizes=dict(sorted(Counter(g.size for g in kept).items())),
        accuracy=sum(r.correct for r in requests) / count,
        mean_latency_s=sum(r.latency_s for r in requests) / count,
        thinking_tokens=sum(r.thinking_tokens for r in requests),
        mean_thinking_tokens=sum(r.thinking_tokens for r in requests) / count,
        trim_saved_fraction=(
            sum(r.trim_saved_tokens for r in requests) / recorded if recorded else 0.0
        ),
        requests=requests,
    )


class SimulationLab:
    """Everything a simulation needs that is costly to build: the banks' groups, the tokenizer,
    the math-verify pool, the rule judge and the branch cache. Use as an async context manager.
    """

    def __init__(
        self,
        traces: Sequence[Path],
        *,
        datasets: Sequence[str] | None = None,
        complete_only: bool = True,
        trimr: TrimRConfig | None = None,
        verdict_delay_tokens: int = 0,
    ) -> None:
        self.files = [Path(t) for t in traces]
        loaded = load_traces(self.files, datasets=datasets or None, complete_only=complete_only)
        if not loaded:
            raise ValueError("no traces left after the filters")
        self.groups = group_by_problem(loaded)
        self._trimr = trimr
        self._delay = verdict_delay_tokens
        self.checker = EquivalenceChecker(timeout_s=5.0)
        self.bank = BranchBank(
            counter=TokenCounter.qwen25(),
            judge=RuleJudge(self.checker),
            checker=self.checker,
            trimr=trimr,
            verdict_delay_tokens=verdict_delay_tokens,
        )

    async def __aenter__(self) -> SimulationLab:
        await self.checker.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.checker.__aexit__(None, None, None)

    async def run(self, tts: TtsOptions, model: SimulationModel | None = None) -> SimulationResult:
        return await simulate(self.groups, tts, bank=self.bank, checker=self.checker, model=model)
