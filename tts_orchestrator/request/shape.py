"""The one place a request's shape is decided: branches, pool, tokens, thinking budget, probes.

:func:`decide_shape` takes what the request asks for, the server's and the API key's caps, the
mode decision (with its rendered prompts) and the latency planner, and returns a frozen
:class:`RequestShape`. Nothing after it changes the shape: the orchestrator runs its phases
(a stage-3 probe's fast samples, then, if the probe escalates, the slow phase planned here).

Caps hold everywhere: an explicit value over a cap is a 400 (``code="key_limit"`` for the key's
caps); a value left to a default, a plan or a probe is bounded by the smaller of the server's
and the key's caps, so the planner plans within them and probes never exceed them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.config import KeyLimits, PoolConfig, Settings
from tts_orchestrator.exceptions import RequestError
from tts_orchestrator.modes.requests import ModeRun, ModeSetup
from tts_orchestrator.planning.planner import Plan
from tts_orchestrator.protocol import ChatCompletionRequest, CompletionRequest, TtsOptions
from verifiers.confidence import ConfidenceConfig
from verifiers.families import ModelFamily

#: Asks the latency planner for a request's plan with N at most ``max_branches`` (None: the
#: request is not planned).
PlanFn = Callable[[SamplingParams, TtsOptions, ModeSetup, int], Awaitable[Plan | None]]


@dataclass(frozen=True)
class Caps:
    """The bounds a request runs within: the server's, tightened by its API key's."""

    max_branches: int
    max_tokens: int
    key_max_branches: int | None = None
    key_max_tokens: int | None = None

    @classmethod
    def of(cls, settings: Settings, limits: KeyLimits | None) -> Caps:
        key_b = limits.max_branches if limits is not None else None
        key_t = limits.max_tokens if limits is not None else None
        server_b, server_t = settings.tts.max_branches, settings.server.max_tokens_cap
        return cls(
            max_branches=min(server_b, key_b) if key_b is not None else server_b,
            max_tokens=min(server_t, key_t) if key_t is not None else server_t,
            key_max_branches=key_b,
            key_max_tokens=key_t,
        )

    def check_branches(self, n: int) -> None:
        _within(
            "n_branches",
            n,
            param="tts.n_branches",
            key=self.key_max_branches,
            cap=self.max_branches,
        )

    def check_tokens(self, n: int) -> None:
        _within("max_tokens", n, param="max_tokens", key=self.key_max_tokens, cap=self.max_tokens)


def _within(what: str, n: int, *, param: str, key: int | None, cap: int) -> None:
    """An explicit value over the API key's cap is a ``key_limit`` 400; over the server's, a 400."""
    if key is not None and n > key:
        raise RequestError(
            f"{what} {n} exceeds this API key's cap {key}", param=param, code="key_limit"
        )
    if n > cap:
        raise RequestError(f"{what} {n} exceeds the cap {cap}", param=param)


@dataclass(frozen=True)
class Phase:
    """One generation phase: every branch of it gets this prompt and these params (its own
    seed aside)."""

    prompt: str
    family: ModelFamily
    params: SamplingParams
    n_branches: int
    tts: TtsOptions
    #: A probe's fast samples (no trimming; their vote decides whether to escalate).
    probe: bool = False
    #: The DeepConf settings when the request votes or stops by confidence.
    confidence: ConfidenceConfig | None = None


@dataclass(frozen=True)
class RequestShape:
    """The decided shape of one request."""

    pool: str
    first: Phase
    #: The slow phase a stage-3 probe escalates to (None: no probe).
    escalation: Phase | None
    plan: Plan | None
    caps: Caps

    def phases(self) -> tuple[Phase, ...]:
        return (self.first,) if self.escalation is None else (self.first, self.escalation)


def _phase(
    run: ModeRun,
    params: SamplingParams,
    tts: TtsOptions,
    n: int,
    *,
    probe: bool = False,
    confidence: ConfidenceConfig | None = None,
) -> Phase:
    if run.thinking_budget is not None and tts.thinking_budget is None:
        tts = tts.model_copy(update={"thinking_budget": run.thinking_budget})
    return Phase(
        prompt=run.prompt,
        family=run.family,
        params=params.model_copy(update={"grammar": run.grammar}),
        n_branches=n,
        tts=tts,
        probe=probe,
        confidence=confidence,
    )


def confidence_settings(
    tts: TtsOptions, *, pool: PoolConfig, defaults: ConfidenceConfig
) -> ConfidenceConfig | None:
    """The request's DeepConf settings (None: it does not use confidence). A pool whose
    engine returns no logprobs cannot run them: a 400, never a silent majority vote."""
    if not tts.uses_confidence:
        if tts.confidence is not None:
            raise RequestError(
                "tts.confidence applies only with aggregation or early_stop 'confidence'",
                param="tts.confidence",
            )
        return None
    if not pool.returns_logprobs:
        field = "aggregation" if tts.aggregation == "confidence" else "early_stop"
        raise RequestError(
            f"pool {pool.name!r} ({pool.engine}) returns no per-token logprobs, which "
            f"tts.{field} 'confidence' needs; use another pool or aggregation",
            param=f"tts.{field}",
            code="logprobs_unavailable",
        )
    return tts.confidence_config(defaults)


async def decide_shape(
    request: ChatCompletionRequest | CompletionRequest,
    *,
    pool: str,
    setup: ModeSetup,
    settings: Settings,
    caps: Caps,
    plan: PlanFn,
) -> RequestShape:
    """The shape of ``request`` on ``pool`` (the planner may move it to another pool of the
    same model); raises RequestError for explicit values over a cap."""
    tts = request.tts or TtsOptions()
    asked_tokens = request.requested_max_tokens()
    if asked_tokens is not None:
        caps.check_tokens(asked_tokens)
    if tts.n_branches is not None:
        caps.check_branches(tts.n_branches)
    params = request.to_sampling_params(
        default_max_tokens=min(settings.server.default_max_tokens, caps.max_tokens),
        max_tokens_cap=caps.max_tokens,
    )
    n = tts.n_branches or min(settings.tts.n_branches, caps.max_branches)
    if setup.first.thinking_budget is not None and tts.thinking_budget is None:
        tts = tts.model_copy(update={"thinking_budget": setup.first.thinking_budget})
    chosen = await plan(params, tts, setup, caps.max_branches)
    if chosen is not None:
        pool, n = chosen.pool, min(chosen.n_branches, caps.max_branches)
        if tts.thinking_budget is None and chosen.thinking_budget is not None:
            tts = tts.model_copy(update={"thinking_budget": chosen.thinking_budget})
    pool_config = next(c for c in settings.pools if c.name == pool)
    confidence = confidence_settings(tts, pool=pool_config, defaults=settings.tts.confidence)
    if confidence is not None:
        asked = params.logprobs or 0
        params = params.model_copy(update={"logprobs": max(asked, confidence.top_logprobs)})
    if setup.escalation is None:
        first = _phase(setup.first, params, tts, n, confidence=confidence)
        return RequestShape(pool=pool, first=first, escalation=None, plan=chosen, caps=caps)
    probes = settings.modes
    probe_params = params.model_copy(
        update={"max_tokens": min(params.max_tokens, probes.probe_max_tokens)}
    )
    probe_n = min(probes.probe_samples, caps.max_branches)
    return RequestShape(
        pool=pool,
        first=_phase(setup.first, probe_params, tts, probe_n, probe=True, confidence=confidence),
        escalation=_phase(setup.escalation, params, tts, n, confidence=confidence),
        plan=chosen,
        caps=caps,
    )
