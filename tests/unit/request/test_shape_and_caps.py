"""The request's shape, decided once: defaults, the planner's choice, probes, and every cap
(server's and API key's), through the real routes with an API key's limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from unit.request.harness import MODEL, Service, branches, service

from policies.profile import PoolProfile, ProfileSet, SpeculativeMethod, StepTimePoint
from policies.router import RouterThresholds
from tts_orchestrator.config import KeyLimits, SecurityConfig
from tts_orchestrator.planning.planner import Plan, Planner, PlanRequest
from tts_orchestrator.planning.store import MemoryProfileStore
from tts_orchestrator.security.auth import AuthContext, Gatekeeper
from tts_orchestrator.security.keys import ApiKeyRecord

FIVE = "So the answer is \\boxed{5}."
ALWAYS_UNCERTAIN = RouterThresholds(fast_below=0.0, slow_at_or_above=1.0)


class KeyedGatekeeper(Gatekeeper):
    """Every request comes with one API key of these limits (the key store is not under test
    here: the integration suite drives it on a real Redis)."""

    def __init__(self, **limits: Any) -> None:
        super().__init__(SecurityConfig())
        self.record = ApiKeyRecord(
            id="key_0123456789abcdef", name="t", created_at=0.0, limits=KeyLimits(**limits)
        )

    async def authenticate(self, headers: Mapping[str, str]) -> AuthContext:
        return AuthContext(self.record)

    async def admit(self, headers: Mapping[str, str]) -> AuthContext:
        return AuthContext(self.record)


def _fast_profile(pool: str = "p") -> PoolProfile:
    """A pool whose step time hardly grows with the batch: more branches are almost free."""
    return PoolProfile(
        pool=pool,
        engine="llama_cpp",
        model=MODEL,
        speculative_method=SpeculativeMethod.NONE,
        speculative_depth=0,
        accepted_tokens_per_step=1.0,
        step_times=tuple(
            StepTimePoint(concurrency=b, step_time_s=0.001 * (1 + 0.01 * b))
            for b in (1, 2, 4, 8, 16)
        ),
        prefill_tokens_per_s=10_000.0,
        max_concurrency=16,
    )


def _planned(**kwargs: Any) -> Service:
    return service(
        branches(FIVE),
        profile_store=MemoryProfileStore(ProfileSet.of([_fast_profile()])),
        **kwargs,
    )


def _branches_run(svc: Service) -> int:
    return len({p.seed for _, _, p in svc.worker.requests})


async def test_defaults_fill_the_shape_and_the_record_keeps_it() -> None:
    async with service(branches(FIVE), tts={"n_branches": 3}).run() as svc:
        body = (await svc.chat(tts={"seed": 0})).json()
        assert body["tts"]["n_branches"] == 3
        record = await svc.record(body["id"])
        assert record["params"]["sampling"]["max_tokens"] == 1024
        assert len(record["branches"]) == 3


async def test_the_planner_picks_the_branches_when_there_is_a_budget() -> None:
    async with _planned().run() as svc:
        body = (await svc.chat(tts={"seed": 0, "latency_budget_s": 5.0})).json()
        record = await svc.record(body["id"])
        assert record["plan"] is not None
        assert record["plan"]["n_branches"] == body["tts"]["n_branches"] > 1
        assert _branches_run(svc) == record["plan"]["n_branches"]


async def test_an_explicit_n_branches_wins_over_the_planner() -> None:
    async with _planned().run() as svc:
        body = (await svc.chat(tts={"seed": 0, "n_branches": 1, "latency_budget_s": 5.0})).json()
        assert (await svc.record(body["id"]))["plan"] is None
        assert _branches_run(svc) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"tts": {"n_branches": 17}}, "tts.n_branches", id="server-branches"),
        pytest.param({"max_tokens": 40000}, "max_tokens", id="server-max-tokens"),
    ],
)
async def test_explicit_values_over_the_server_caps_are_400(
    body: dict[str, Any], param: str
) -> None:
    async with service(branches(FIVE)).run() as svc:
        r = await svc.chat(**body)
        assert r.status_code == 400
        assert r.json()["error"]["param"] == param
        assert svc.worker.requests == []


@pytest.mark.parametrize(
    ("limits", "body", "param"),
    [
        pytest.param({"max_branches": 2}, {"tts": {"n_branches": 3}}, "tts.n_branches", id="b"),
        pytest.param({"max_tokens": 64}, {"max_tokens": 65}, "max_tokens", id="tokens"),
        pytest.param(
            {"max_tokens": 64}, {"max_completion_tokens": 65}, "max_tokens", id="completion"
        ),
    ],
)
async def test_explicit_values_over_a_key_cap_are_400(
    limits: dict[str, int], body: dict[str, Any], param: str
) -> None:
    async with service(branches(FIVE), gatekeeper=KeyedGatekeeper(**limits)).run() as svc:
        r = await svc.chat(**body)
        error = r.json()["error"]
        assert r.status_code == 400
        assert (error["param"], error["code"]) == (param, "key_limit")
        assert svc.worker.requests == []


async def test_defaults_above_a_key_cap_are_brought_down_to_it() -> None:
    gate = KeyedGatekeeper(max_branches=2, max_tokens=64)
    async with service(branches(FIVE), gatekeeper=gate, tts={"n_branches": 4}).run() as svc:
        body = (await svc.chat(tts={"seed": 0})).json()
        assert body["tts"]["n_branches"] == 2
        assert _branches_run(svc) == 2
        assert {p.max_tokens for _, _, p in svc.worker.requests} == {64}


async def test_the_planner_plans_within_the_key_cap() -> None:
    async with _planned(gatekeeper=KeyedGatekeeper(max_branches=2)).run() as svc:
        body = (await svc.chat(tts={"seed": 0, "latency_budget_s": 5.0})).json()
        record = await svc.record(body["id"])
        assert record["plan"] is not None
        assert record["plan"]["n_branches"] <= 2
        assert _branches_run(svc) <= 2
    async with _planned().run() as svc:  # the same request without the cap plans more
        body = (await svc.chat(tts={"seed": 0, "latency_budget_s": 5.0})).json()
        assert (await svc.record(body["id"]))["plan"]["n_branches"] > 2


async def test_auto_mode_probes_never_exceed_the_key_cap() -> None:
    gate = KeyedGatekeeper(max_branches=2, max_tokens=32)
    modes = {"probe_samples": 5, "on_uncertain": "probe"}
    async with service(branches(FIVE, "So \\boxed{7}."), gatekeeper=gate, modes=modes).run() as svc:
        resolver = svc.services.orchestrator.modes
        resolver.router = resolver.router.model_copy(update={"thresholds": ALWAYS_UNCERTAIN})
        body = (await svc.chat(tts={"seed": 0, "mode": "auto"})).json()
        assert body["tts"]["mode"]["stage"] == "probe"
        seeds = [p.seed for _, _, p in svc.worker.requests]
        assert max(seeds) < 2  # probes, then the escalation: never a third branch
        assert all(p.max_tokens <= 32 for _, _, p in svc.worker.requests)


async def test_auto_with_a_budget_plans_within_the_key_cap() -> None:
    gate = KeyedGatekeeper(max_branches=1)
    async with _planned(gatekeeper=gate).run() as svc:
        resolver = svc.services.orchestrator.modes
        resolver.router = resolver.router.model_copy(update={"thresholds": ALWAYS_UNCERTAIN})
        body = (await svc.chat(tts={"seed": 0, "mode": "auto", "latency_budget_s": 5.0})).json()
        assert all((p.seed or 0) < 1 for _, _, p in svc.worker.requests)
        record = await svc.record(body["id"])
        assert record["plan"] is None or record["plan"]["n_branches"] == 1


@pytest.mark.parametrize(
    ("tts", "held"),
    [
        pytest.param({"early_stop": "confidence"}, 3, id="confidence-stop-holds-the-warm-up"),
        pytest.param(
            {"early_stop": "confidence", "confidence": {"warmup": 2}}, 2, id="its-own-warm-up"
        ),
        pytest.param(
            {"early_stop": "confidence", "confidence": {"warmup_first": False}},
            None,
            id="all-at-once",
        ),
        pytest.param({"aggregation": "confidence"}, None, id="vote-only"),
        pytest.param({}, None, id="majority"),
    ],
)
async def test_the_planner_prices_a_warm_up_first_early_stop(
    tts: dict[str, Any], held: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The latency policy is told which branches run before the others, so it prices the
    second phase after the warm-up rather than every branch at once."""
    seen: list[PlanRequest] = []
    plan = Planner.plan

    def spy(self: Planner, request: PlanRequest) -> Plan:
        seen.append(request)
        return plan(self, request)

    monkeypatch.setattr(Planner, "plan", spy)
    async with _planned().run() as svc:
        r = await svc.chat(tts={"seed": 0, "latency_budget_s": 5.0, **tts})
        assert r.status_code == 200, r.text
    assert [s.warmup_first for s in seen] == [held]
