"""Which thinking mode a request runs in, why, and how the pool's family switches it.

Inputs, highest priority first: ``tts.mode`` (fast | slow | auto), the client's
``chat_template_kwargs.enable_thinking``, OpenAI's ``reasoning_effort`` (mapped by
:class:`policies.modes.EffortPolicy`), then ``modes.default_mode`` from config (unset: the
family's own default, slow for families trained to think and fast for the others). ``auto``
goes to the family's trained auto mode when it has one (openPangu ``/auto_think``), else to the
stage-1 router (:class:`policies.router.RouterModel`); an uncertain stage-1 score gives mode
``probe``: the orchestrator answers with k fast samples and calls :meth:`ModeResolver.after_probe`
to stay fast or escalate to slow thinking (stage 3).

The thinking budget of slow thinking: ``tts.thinking_budget`` > the effort level's budget >
``modes.slow_thinking_budget``. Fast mode has none.

The shipped stage-1 model, ``policies/data/router-default.json``, is the stage 1 of the auto
policy fitted on recorded GSM8K answers of Qwen2.5-32B-Instruct (fast) and QwQ-32B (slow): slow
from its cut, every other ``auto`` request probed (see ``policies/data/README.md``). Refit it
for your model with ``tts-orchestrator router fit --logs ...`` or ``--pair ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies.answer_signals import AnswerView, answer_signals
from policies.auto import AutoPolicy
from policies.modes import ReasoningEffort, ThinkingMode
from policies.router import RouterModel, RouteVerdict, probe_decision
from policies.switches import ModePlan, SwitchTable
from tts_orchestrator.config.modes import ModesConfig, ProbeCheck
from tts_orchestrator.exceptions import ConfigError, RequestError
from verifiers.answers import extract_final_answer
from verifiers.claims import ClaimReport
from verifiers.families import ModelFamily, get_family

DEFAULT_ROUTER = "router-default.json"
DEFAULT_AUTO = "auto-default.json"


class RunMode(StrEnum):
    """What the orchestrator runs: a concrete mode, the family's own auto mode, or a probe."""

    FAST = "fast"
    SLOW = "slow"
    AUTO = "auto"  # the family's trained auto mode decides
    PROBE = "probe"  # k fast samples, then stay fast or escalate (stage 3)


class DecisionStage(StrEnum):
    """Which input or stage decided the mode."""

    REQUEST = "request"  # tts.mode
    TEMPLATE_KWARGS = "template_kwargs"  # chat_template_kwargs.enable_thinking
    EFFORT = "effort"  # reasoning_effort
    DEFAULT = "default"  # config or family default
    NATIVE_AUTO = "native_auto"  # the family's trained auto mode
    ROUTER = "router"  # stage 1: prompt features
    PROBE = "probe"  # stage 3: fast probes agreed or not


class ModeChoice(BaseModel):
    """The mode decision of one request, for its record and metrics."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RunMode
    stage: DecisionStage
    reason: str
    score: float | None = Field(None, description="Stage-1 P(needs slow thinking), if scored.")
    thinking_budget: int | None = Field(None, description="Thinking tokens of slow thinking.")
    requested: str | None = Field(None, description="What the client asked for, if anything.")
    switch: str | None = Field(None, description="How the family's thinking was switched.")


class ModeResolution(BaseModel):
    """A decision and the plan(s) that carry it out.

    ``plan`` runs first (the fast plan of a probe); ``escalation`` is the slow plan a probe
    escalates to. Both are None for a raw prompt (``/v1/completions``), which is sent as is.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    choice: ModeChoice
    plan: ModePlan | None
    escalation: ModePlan | None = None


def splitter_family(plan: ModePlan) -> ModelFamily:
    """The family whose markers split the output of ``plan``, starting where the output does."""
    family = get_family(plan.split_family)
    if family.starts_in_thinking == plan.output_starts_in_thinking:
        return family
    return family.model_copy(update={"starts_in_thinking": plan.output_starts_in_thinking})


def load_auto_policy(path: str | Path | None) -> AutoPolicy:
    """The auto policy at ``path``, or the shipped one; ConfigError when unreadable."""
    try:
        if path is None:
            text = resources.files("policies.data").joinpath(DEFAULT_AUTO).read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return AutoPolicy.model_validate_json(text)
    except (OSError, ValidationError, ValueError) as exc:
        raise ConfigError(f"cannot load the auto policy {path or DEFAULT_AUTO}: {exc}") from exc


def load_router(path: str | Path | None) -> RouterModel:
    """The stage-1 model at ``path``, or the shipped model; ConfigError when unreadable."""
    try:
        if path is None:
            text = resources.files("policies.data").joinpath(DEFAULT_ROUTER).read_text("utf-8")
            return RouterModel.from_json(text)
        return RouterModel.load(path)
    except (OSError, ValidationError, ValueError) as exc:
        raise ConfigError(f"cannot load the router model {path or DEFAULT_ROUTER}: {exc}") from exc


class ModeResolver:
    """Turns a request's mode inputs into a :class:`ModeChoice` and the :class:`ModePlan`."""

    def __init__(
        self,
        config: ModesConfig | None = None,
        *,
        router: RouterModel | None = None,
        switches: SwitchTable | None = None,
    ) -> None:
        self.config = config or ModesConfig()
        self.router = router if router is not None else load_router(self.config.router_model)
        self.auto_policy = (
            load_auto_policy(self.config.auto_policy)
            if self.config.probe_check is ProbeCheck.ANSWER_SIGNALS
            else None
        )
        self.switches = switches or SwitchTable()

    def check_family(self, family: str) -> None:
        """ConfigError unless ``family`` is known and has a switch (call it per pool at start)."""
        try:
            get_family(family)
            self.switches.switch_for(family)
        except KeyError as exc:
            raise ConfigError(str(exc.args[0])) from None

    # -- the decision ------------------------------------------------------------------------
    def decide(
        self,
        family: ModelFamily,
        *,
        prompt_text: str,
        mode: ThinkingMode | None = None,
        reasoning_effort: str | None = None,
        thinking_budget: int | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> ModeChoice:
        """The mode of one request and why (see the module docstring for the precedence)."""
        budget = (
            thinking_budget if thinking_budget is not None else self.config.slow_thinking_budget
        )
        flag = (template_kwargs or {}).get("enable_thinking")
        if mode is not None:
            requested = f"tts.mode={mode.value}"
            if mode is ThinkingMode.AUTO:
                return self._auto(
                    family, prompt_text=prompt_text, budget=budget, requested=requested
                )
            return self._fixed(
                mode,
                DecisionStage.REQUEST,
                requested=requested,
                reason=f"{requested} requested",
                budget=budget,
            )
        if isinstance(flag, bool):
            chosen = ThinkingMode.SLOW if flag else ThinkingMode.FAST
            requested = f"chat_template_kwargs.enable_thinking={str(flag).lower()}"
            reason = f"{requested} requested"
            return self._fixed(
                chosen,
                DecisionStage.TEMPLATE_KWARGS,
                requested=requested,
                reason=reason,
                budget=budget,
            )
        if reasoning_effort is not None:
            return self._effort(
                family, prompt_text=prompt_text, effort=reasoning_effort, budget=thinking_budget
            )
        default = self.config.default_mode
        if default is not None:
            reason = f"no mode requested: server default {default.value}"
            if default is ThinkingMode.AUTO:
                return self._auto(
                    family, prompt_text=prompt_text, budget=budget, requested=None, prefix=reason
                )
            return self._fixed(
                default, DecisionStage.DEFAULT, requested=None, reason=reason, budget=budget
            )
        native = ThinkingMode.SLOW if family.native_thinking else ThinkingMode.FAST
        kind = "is trained to think" if family.native_thinking else "has no native thinking"
        reason = f"no mode requested: family {family.name} {kind}, so {native.value}"
        return self._fixed(
            native, DecisionStage.DEFAULT, requested=None, reason=reason, budget=budget
        )

    @staticmethod
    def _fixed(
        mode: ThinkingMode,
        stage: DecisionStage,
        *,
        requested: str | None,
        reason: str,
        budget: int | None,
    ) -> ModeChoice:
        return ModeChoice(
            mode=RunMode(mode.value),
            stage=stage,
            reason=reason,
            thinking_budget=budget if mode is ThinkingMode.SLOW else None,
            requested=requested,
        )

    def _effort(
        self, family: ModelFamily, *, prompt_text: str, effort: str, budget: int | None
    ) -> ModeChoice:
        try:
            setting = self.config.effort.setting_for(effort)
        except ValueError as exc:
            raise RequestError(str(exc), param="reasoning_effort") from None
        requested = f"reasoning_effort={ReasoningEffort(effort).value}"
        if budget is None:
            budget = setting.thinking_budget
        if budget is None:
            budget = self.config.slow_thinking_budget
        if setting.mode is ThinkingMode.AUTO:
            return self._auto(
                family,
                prompt_text=prompt_text,
                budget=budget,
                requested=requested,
                prefix=f"{requested} maps to auto",
            )
        slow = setting.mode is ThinkingMode.SLOW
        shown = f" with a {budget}-token thinking budget" if slow and budget is not None else ""
        reason = f"{requested} maps to {setting.mode.value}{shown}"
        return self._fixed(
            setting.mode, DecisionStage.EFFORT, requested=requested, reason=reason, budget=budget
        )

    def _auto(
        self,
        family: ModelFamily,
        *,
        prompt_text: str,
        budget: int | None,
        requested: str | None,
        prefix: str | None = None,
    ) -> ModeChoice:
        lead = f"{prefix}; " if prefix else ""
        if self.config.prefer_native_auto and self.switches.switch_for(family.name).native_auto:
            return ModeChoice(
                mode=RunMode.AUTO,
                stage=DecisionStage.NATIVE_AUTO,
                reason=f"{lead}auto: family {family.name} has a trained auto mode",
                thinking_budget=budget,
                requested=requested,
            )
        decision = self.router.decide(prompt_text)
        reason = f"{lead}auto: {decision.reason}"
        if decision.mode is RouteVerdict.UNCERTAIN:
            mode = RunMode(self.config.on_uncertain.value)
            reason += f"; uncertain → {mode.value}"
        else:
            mode = RunMode(decision.mode.value)
        return ModeChoice(
            mode=mode,
            stage=DecisionStage.ROUTER,
            reason=reason,
            score=decision.score,
            thinking_budget=budget if mode in (RunMode.SLOW, RunMode.PROBE) else None,
            requested=requested,
        )

    def after_probe(
        self,
        choice: ModeChoice,
        answers: Sequence[str | None],
        *,
        equivalent: Callable[[str, str], bool] | None = None,
        confidences: Sequence[float] | None = None,
        min_confidence: float = 0.0,
        texts: Sequence[str] = (),
        problem: str = "",
        claims: ClaimReport | None = None,
    ) -> ModeChoice:
        """Stage 3: stay fast when the probes' answers agree (or, with ``answer_signals``, when
        the first probe's ``texts`` look settled for ``problem``; ``claims``: that text's
        :func:`verifiers.claims.check_claims`, which the caller runs off the event loop),
        else escalate to slow."""
        if self.auto_policy is not None and texts:
            return self._answer_check(
                choice, problem=problem, text=texts[0], claims=claims or ClaimReport()
            )
        verdict = probe_decision(
            answers,
            equivalent=equivalent,
            min_agreement=self.config.probe_min_agreement,
            confidences=confidences,
            min_confidence=min_confidence,
        )
        mode = RunMode.SLOW if verdict.escalate else RunMode.FAST
        return choice.model_copy(
            update={
                "mode": mode,
                "stage": DecisionStage.PROBE,
                "reason": f"{choice.reason}; {verdict.reason}",
                "thinking_budget": choice.thinking_budget if verdict.escalate else None,
            }
        )

    @property
    def checks_claims(self) -> bool:
        """Whether stage 3 reads the probe's claims (``probe_check: answer_signals``)."""
        return self.auto_policy is not None

    def _answer_check(
        self, choice: ModeChoice, *, problem: str, text: str, claims: ClaimReport
    ) -> ModeChoice:
        assert self.auto_policy is not None
        view = AnswerView(
            problem=problem,
            text=text,
            answer=extract_final_answer(text),
            refuted_claims=claims.refuted,
        )
        stage1 = self.auto_policy.start(problem).score
        step = self.auto_policy.after_answer(0, answer_signals(view), stage1)
        escalate = not step.stop
        refuted = f" (refuted: {claims.refuted[0]})" if claims.refuted else ""
        return choice.model_copy(
            update={
                "mode": RunMode.SLOW if escalate else RunMode.FAST,
                "stage": DecisionStage.PROBE,
                "reason": f"{choice.reason}; {step.reason}{refuted}",
                "thinking_budget": choice.thinking_budget if escalate else None,
            }
        )

    # -- the plan ----------------------------------------------------------------------------
    def plan(
        self,
        family: ModelFamily,
        mode: RunMode,
        messages: Sequence[Mapping[str, str]],
        *,
        template_kwargs: Mapping[str, Any] | None = None,
        as_sent: bool = False,
    ) -> ModePlan:
        """The family's switch for a concrete mode (``probe`` plans its fast samples);
        ``as_sent``: no mode was chosen by anyone, so the family's unswitched plan."""
        concrete = ThinkingMode.FAST if mode is RunMode.PROBE else ThinkingMode(mode.value)
        return self.switches.plan(
            family, concrete, messages, template_kwargs=template_kwargs, as_sent=as_sent
        )

    def resolve(
        self,
        family: ModelFamily,
        *,
        messages: Sequence[Mapping[str, str]] | None,
        prompt_text: str | None = None,
        mode: ThinkingMode | None = None,
        reasoning_effort: str | None = None,
        thinking_budget: int | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> ModeResolution:
        """Decide the mode and plan it. ``messages=None`` is a raw prompt: decided, not switched.

        ``prompt_text`` is what the router scores; by default the last user turn.
        """
        text = prompt_text if prompt_text is not None else _last_user_text(messages or [])
        choice = self.decide(
            family,
            prompt_text=text,
            mode=mode,
            reasoning_effort=reasoning_effort,
            thinking_budget=thinking_budget,
            template_kwargs=template_kwargs,
        )
        if messages is None:
            note = "; raw prompt: sent as is, no thinking switch applied"
            return ModeResolution(
                choice=choice.model_copy(update={"reason": choice.reason + note}), plan=None
            )
        unchosen = choice.stage is DecisionStage.DEFAULT and self.config.default_mode is None
        plan = self.plan(
            family, choice.mode, messages, template_kwargs=template_kwargs, as_sent=unchosen
        )
        escalation = None
        if choice.mode is RunMode.PROBE:
            escalation = self.plan(family, RunMode.SLOW, messages, template_kwargs=template_kwargs)
        return ModeResolution(
            choice=choice.model_copy(update={"switch": plan.switch}),
            plan=plan,
            escalation=escalation,
        )


def _last_user_text(messages: Sequence[Mapping[str, str]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    return "\n".join(m.get("content", "") for m in messages)
