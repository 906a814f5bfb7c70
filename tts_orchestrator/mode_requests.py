"""A request's thinking mode, applied: the prompt, output family and grammar each mode runs with.

:class:`tts_orchestrator.modes.ModeResolver` decides and plans; this module turns that plan into
what the orchestrator sends (the rendered prompt plus prefill, the grammar, the family whose
markers split the output) and, for a stage-3 probe, what it escalates to. It also reads a
finished probe's vote back as the answers :meth:`ModeResolver.after_probe` judges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from policies.modes import ThinkingMode
from policies.switches import ModePlan
from tts_orchestrator.modes import ModeChoice, ModeResolver, RunMode, splitter_family
from verifiers.families import ModelFamily


class Renderer(Protocol):
    async def render(
        self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]
    ) -> str: ...


@dataclass(frozen=True)
class ModeRun:
    """One phase of a request in a concrete mode."""

    prompt: str
    family: ModelFamily
    grammar: str | None
    thinking_budget: int | None


@dataclass(frozen=True)
class ModeSetup:
    """The decision and the phase that runs first; ``escalation`` is the slow phase of a probe."""

    choice: ModeChoice
    first: ModeRun
    escalation: ModeRun | None = None

    @property
    def probing(self) -> bool:
        return self.escalation is not None

    @property
    def thinking(self) -> ThinkingMode | None:
        """The mode the planner budgets for (a probe may end up thinking, so slow)."""
        mode = self.choice.mode
        if mode in (RunMode.SLOW, RunMode.PROBE):
            return ThinkingMode.SLOW
        return ThinkingMode.FAST if mode is RunMode.FAST else None


async def _apply(renderer: Renderer, plan: ModePlan, budget: int | None, *, slow: bool) -> ModeRun:
    rendered = await renderer.render(plan.messages, plan.template_kwargs)
    return ModeRun(
        prompt=plan.prompt(rendered),
        family=splitter_family(plan),
        grammar=plan.grammar,
        thinking_budget=budget if slow else None,
    )


async def setup_chat(
    resolver: ModeResolver,
    renderer: Renderer,
    family: ModelFamily,
    messages: Sequence[Mapping[str, str]],
    *,
    mode: ThinkingMode | None,
    reasoning_effort: str | None,
    thinking_budget: int | None,
    template_kwargs: Mapping[str, Any] | None,
) -> ModeSetup:
    """Decide the mode of a chat request and render the prompt(s) its family's switch needs."""
    resolution = resolver.resolve(
        family,
        messages=messages,
        mode=mode,
        reasoning_effort=reasoning_effort,
        thinking_budget=thinking_budget,
        template_kwargs=template_kwargs,
    )
    choice = resolution.choice
    assert resolution.plan is not None  # chat messages always get a plan
    budget = choice.thinking_budget
    first = await _apply(
        renderer, resolution.plan, budget, slow=choice.mode in (RunMode.SLOW, RunMode.AUTO)
    )
    escalation = None
    if resolution.escalation is not None:
        escalation = await _apply(renderer, resolution.escalation, budget, slow=True)
    return ModeSetup(choice=choice, first=first, escalation=escalation)


def setup_raw(
    resolver: ModeResolver,
    family: ModelFamily,
    prompt: str,
    *,
    mode: ThinkingMode | None,
    thinking_budget: int | None,
) -> ModeSetup:
    """A raw prompt (`/v1/completions`) is sent as is: the mode is decided and recorded only."""
    resolution = resolver.resolve(
        family, messages=None, prompt_text=prompt, mode=mode, thinking_budget=thinking_budget
    )
    choice = resolution.choice
    if choice.mode is RunMode.PROBE:  # nothing to switch, so nothing to probe
        choice = choice.model_copy(update={"mode": RunMode.AUTO})
    return ModeSetup(
        choice=choice,
        first=ModeRun(prompt=prompt, family=family, grammar=None, thinking_budget=thinking_budget),
    )


def probe_answers(vote: Mapping[str, Any] | None, n_branches: int) -> list[str | None]:
    """Each probe's answer as its vote cluster's key (None: no parseable answer), so that
    exact equality groups them as the equivalence vote did."""
    answers: list[str | None] = [None] * n_branches
    for i, cluster in enumerate((vote or {}).get("clusters", [])):
        for branch in cluster["branches"]:
            answers[int(branch)] = f"cluster-{i}"
    return answers
