"""The mode plan applied to a request: prompts, families, grammar, budgets, probe answers."""

from __future__ import annotations

import time
from typing import Any

import pytest

from policies.modes import ThinkingMode
from policies.router import RouterThresholds
from tts_orchestrator.config.modes import ModesConfig, UncertainAction
from tts_orchestrator.modes import requests
from tts_orchestrator.modes.requests import (
    ModeSetup,
    probe_answers,
    probe_claims,
    raw_setup,
    render_chat,
)
from tts_orchestrator.modes.resolution import ModeResolver, RunMode
from verifiers.claims import ClaimReport
from verifiers.families import ModelFamily, get_family

ALWAYS_UNCERTAIN = RouterThresholds(fast_below=0.0, slow_at_or_above=1.0)
QUESTION = [{"role": "user", "content": "What is 2 + 3?"}]


class EchoRenderer:
    """Renders messages as `role: content` lines, recording the kwargs it was given."""

    def __init__(self) -> None:
        self.kwargs: list[dict[str, Any]] = []

    async def render(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]) -> str:
        self.kwargs.append(dict(template_kwargs))
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


async def chat_setup(
    resolver: ModeResolver, renderer: EchoRenderer, family: ModelFamily, **inputs: Any
) -> ModeSetup:
    """What `Orchestrator.prepare` does for a chat request: resolve, then render."""
    return await render_chat(resolver.resolve(family, messages=QUESTION, **inputs), renderer)


async def test_slow_generic_gets_instruction_grammar_and_budget() -> None:
    renderer = EchoRenderer()
    setup = await chat_setup(
        ModeResolver(ModesConfig(slow_thinking_budget=300)),
        renderer,
        get_family("generic"),
        mode=ThinkingMode.SLOW,
        reasoning_effort=None,
        thinking_budget=None,
        template_kwargs=None,
    )
    assert setup.choice.mode is RunMode.SLOW
    assert not setup.probing
    assert setup.first.prompt.startswith("system: ")
    assert "<think>" in setup.first.prompt
    assert setup.first.grammar is not None
    assert "think" in setup.first.grammar
    assert setup.first.family.name == "prompted_think"
    assert setup.first.family.has_markers
    assert setup.first.thinking_budget == 300


async def test_fast_r1_prefills_a_closed_block_and_has_no_budget() -> None:
    setup = await chat_setup(
        ModeResolver(),
        EchoRenderer(),
        get_family("deepseek_r1"),
        mode=ThinkingMode.FAST,
        reasoning_effort=None,
        thinking_budget=500,
        template_kwargs=None,
    )
    family = get_family("deepseek_r1")
    assert setup.first.prompt.endswith(f"{family.think_close}\n\n")
    assert not setup.first.family.starts_in_thinking
    assert setup.first.thinking_budget is None
    assert setup.first.grammar is None


async def test_qwen3_switch_reaches_the_template_kwargs() -> None:
    renderer = EchoRenderer()
    await chat_setup(
        ModeResolver(),
        renderer,
        get_family("qwen3"),
        mode=None,
        reasoning_effort="low",
        thinking_budget=None,
        template_kwargs={"custom": 1},
    )
    assert renderer.kwargs == [{"custom": 1, "enable_thinking": False}]


async def test_uncertain_auto_probes_fast_and_renders_the_slow_escalation() -> None:
    config = ModesConfig(on_uncertain=UncertainAction.PROBE, slow_thinking_budget=256)
    resolver = ModeResolver(config)
    resolver.router = resolver.router.model_copy(update={"thresholds": ALWAYS_UNCERTAIN})
    setup = await chat_setup(
        resolver,
        EchoRenderer(),
        get_family("generic"),
        mode=ThinkingMode.AUTO,
        reasoning_effort=None,
        thinking_budget=None,
        template_kwargs=None,
    )
    assert setup.choice.mode is RunMode.PROBE
    assert setup.probing
    assert setup.thinking is ThinkingMode.SLOW
    assert setup.first.grammar is None
    assert setup.first.thinking_budget is None
    assert setup.escalation is not None
    assert setup.escalation.grammar is not None
    assert setup.escalation.thinking_budget == 256


def test_raw_prompts_are_decided_but_never_probed() -> None:
    resolver = ModeResolver()
    resolver.router = resolver.router.model_copy(update={"thresholds": ALWAYS_UNCERTAIN})
    family = get_family("generic")
    resolution = resolver.resolve(
        family, messages=None, prompt_text="2+3=", mode=ThinkingMode.AUTO, thinking_budget=None
    )
    setup = raw_setup(resolution, family, "2+3=")
    assert setup.choice.mode is RunMode.AUTO
    assert not setup.probing
    assert setup.first.prompt == "2+3="
    assert "raw prompt" in setup.choice.reason


@pytest.mark.parametrize(
    ("vote", "expected"),
    [
        (None, [None, None, None]),
        (
            {"clusters": [{"branches": [0, 2]}, {"branches": [1]}]},
            ["cluster-0", "cluster-1", "cluster-0"],
        ),
        ({"clusters": [{"branches": [1]}]}, [None, "cluster-0", None]),
    ],
)
def test_probe_answers_are_vote_cluster_keys(
    vote: dict[str, Any] | None, expected: list[str | None]
) -> None:
    assert probe_answers(vote, 3) == expected


def test_probe_answers_feed_stage_three() -> None:
    resolver = ModeResolver()
    choice = resolver.decide(get_family("generic"), prompt_text="2+3", mode=ThinkingMode.FAST)
    agree = resolver.after_probe(choice, probe_answers({"clusters": [{"branches": [0, 1, 2]}]}, 3))
    split = resolver.after_probe(
        choice, probe_answers({"clusters": [{"branches": [0, 1]}, {"branches": [2]}]}, 3)
    )
    assert agree.mode is RunMode.FAST
    assert split.mode is RunMode.SLOW


async def test_probe_claims_are_checked_off_the_loop_under_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = await probe_claims("So \\(15 \\times 5 = 70\\).", timeout_s=30.0)
    assert report.refuted == ("15 \\times 5 = 70",)

    def stuck(text: str) -> ClaimReport:
        time.sleep(0.5)
        return ClaimReport(checked=1, refuted=("never seen",))

    monkeypatch.setattr(requests, "check_claims", stuck)
    assert await probe_claims("anything", timeout_s=0.05) == ClaimReport()
