"""Token accounting and budgets through the real route: an answer always fits in max_tokens,
and usage reports reasoning tokens summed over branches (streamed and not)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from unit.request.harness import service

from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.backends.scripted import Script

ANSWER = "The answer is \\boxed{5}."
THINKING = "Let me add 2 and 3 once more to be very sure of it. " * 40  # 480 word tokens
CUT = "time to give the answer"


def thinker(*, opens: bool) -> Callable[[str, SamplingParams], Script]:
    """Thinks for 480 tokens before answering (opening the block itself unless the template
    did); a continuation after a cut just answers."""

    def play(prompt: str, params: SamplingParams) -> Script:
        if CUT in prompt:
            return Script.text(ANSWER)
        return Script.text(("<think>" if opens else "") + THINKING + "</think>\n\n" + ANSWER)

    return play


def _message(body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = body["choices"][0]["message"]
    return message


@pytest.mark.parametrize(
    ("family", "tts", "opens"),
    [
        pytest.param("generic", {"mode": "slow"}, True, id="generic-slow-mode"),
        pytest.param("deepseek_r1", {}, False, id="template-opens-thinking"),
        pytest.param("qwen3", {"mode": "slow"}, True, id="qwen3-slow-mode"),
    ],
)
async def test_thinking_never_eats_the_answer_of_max_tokens(
    family: str, tts: dict[str, Any], opens: bool
) -> None:
    async with service(thinker(opens=opens), family=family).run() as svc:
        r = await svc.chat(max_tokens=200, tts=tts)
        body = r.json()
        assert r.status_code == 200, body
        assert _message(body)["content"].strip() == ANSWER
        assert body["choices"][0]["finish_reason"] == "stop"
        # Thinking was closed with half of max_tokens left for the answer, within max_tokens.
        first, then = svc.worker.requests[0][2], svc.worker.requests[-1][2]
        assert first.max_tokens == 200
        assert then.max_tokens == 100
        assert body["usage"]["completion_tokens"] <= 200
        [cut] = (await svc.record(body["id"]))["trims"]["interventions"]
        assert cut["rule"] == "thinking_budget"
        assert cut["thinking_tokens"] == 100
        assert body["tts"]["tokens"]["trimmed"] == 100


async def test_a_thinking_budget_cut_answers_within_max_tokens() -> None:
    async with service(thinker(opens=False), family="deepseek_r1").run() as svc:
        body = (await svc.chat(max_tokens=300, tts={"thinking_budget": 250})).json()
        assert _message(body)["content"].strip() == ANSWER
        # The budget (250) is over what max_tokens leaves thinking (300 - 150): the cap wins,
        # and the answer gets the rest of max_tokens, not a fresh answer budget.
        assert svc.worker.requests[-1][2].max_tokens == 150
        assert body["usage"]["completion_tokens"] <= 300


async def test_an_answer_cut_by_max_tokens_still_says_length() -> None:
    def rambler(prompt: str, params: SamplingParams) -> Script:
        if CUT in prompt:
            return Script.text("The answer is " + "very " * 300 + "5.")
        return Script.text(THINKING)

    async with service(rambler, family="deepseek_r1").run() as svc:
        body = (await svc.chat(max_tokens=200)).json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert _message(body)["content"].strip().startswith("The answer is very")


def two_thinkers(prompt: str, params: SamplingParams) -> Script:
    thought = "2 and 3 make 5. " * (3 + (params.seed or 0))  # 5 tokens a sentence: 15 or 20
    return Script.text(f"{thought}</think>\n\n{ANSWER}")


async def test_reasoning_tokens_are_summed_over_branches_streamed_or_not() -> None:
    async with service(two_thinkers, family="deepseek_r1").run() as svc:
        tts = {"seed": 0, "n_branches": 2}
        body = (await svc.chat(tts=tts)).json()
        usage = body["usage"]
        # Thinking tokens: 15 + 20, each branch's closing marker counted with them.
        assert usage["completion_tokens_details"] == {"reasoning_tokens": 15 + 1 + 20 + 1}
        assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
        assert body["tts"]["tokens"]["reasoning"] == 37
        assert body["tts"]["tokens"]["generated"] == usage["completion_tokens"]

        events = await svc.stream(tts=tts, stream_options={"include_usage": True})
        [streamed] = [e["usage"] for e in events if e.get("usage")]
        assert streamed["completion_tokens_details"] == usage["completion_tokens_details"]
        assert streamed["completion_tokens"] == usage["completion_tokens"]
        metrics = (await svc.client.get("/metrics")).text
        assert "tts_reasoning_tokens_total 74.0" in metrics
