"""A request's thinking mode, applied: the prompt, output family and grammar each mode runs with.

:class:`tts_orchestrator.modes.ModeResolver` decides and plans; this module turns that plan into
what the orchestrator sends (the rendered prompt plus prefill, the grammar, the family whose
markers split the output) and, for a stage-3 probe, what it escalates to. It also reads a
finished probe's vote back as the answers :meth:`ModeResolver.after_probe` judges, and checks
the probe's own claims (:func:`probe_claims`) off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from policies.modes import ThinkingMode
from policies.switches import ModePlan
from tts_orchestrator.modes.resolution import ModeChoice, ModeResolution, RunMode, splitter_family
from verifiers.claims import ClaimReport, check_claims
from verifiers.families import ModelFamily

logger = logging.getLogger(__name__)


async def probe_claims(text: str, *, timeout_s: float) -> ClaimReport:
    """:func:`verifiers.claims.check_claims` of a probe's text in a worker thread (sympy), under
    ``timeout_s``; on timeout nothing counts as refuted (the learned check still decides)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(check_claims, text)
    except TimeoutError:
        logger.warning("claim check of a probe overran %.1f s: no claim counted", timeout_s)
        return ClaimReport()


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


async def render_chat(resolution: ModeResolution, renderer: Renderer) -> ModeSetup:
    """Render the prompt(s) the family's switch planned for a chat request."""
    choice = resolution.choice
    if resolution.plan is None:
        raise ValueError("a chat request's resolution carries a plan")
    budget = choice.thinking_budget
    first = await _apply(
        renderer, resolution.plan, budget, slow=choice.mode in (RunMode.SLOW, RunMode.AUTO)
    )
    escalation = None
    if resolution.escalation is not None:
        escalation = await _apply(renderer, resolution.escalation, budget, slow=True)
    return ModeSetup(choice=choice, first=first, escalation=escalation)


def raw_setup(resolution: ModeResolution, family: ModelFamily, prompt: str) -> ModeSetup:
    """A raw prompt (`/v1/completions`) is sent as is: the mode is decided and recorded only."""
    choice = resolution.choice
    if choice.mode is RunMode.PROBE:  # nothing to switch, so nothing to probe
        choice = choice.model_copy(update={"mode": RunMode.AUTO})
    first = ModeRun(
        prompt=prompt, family=family, grammar=None, thinking_budget=choice.thinking_budget
    )
    return ModeSetup(choice=choice, first=first)


def probe_answers(vote: Mapping[str, Any] | None, n_branches: int) -> list[str | None]:
    """Each probe's answer as its vote cluster's key (None: no parseable answer), so that
    exact equality groups them as the equivalence vote did."""
    answers: list[str | None] = [None] * n_branches
    for i, cluster in enumerate((vote or {}).get("clusters", [])):
        for branch in cluster["branches"]:
            answers[int(branch)] = f"cluster-{i}"
    return answers
