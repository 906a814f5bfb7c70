"""Live TrimR interventions and thinking-mode switches through the real route, in process."""

from __future__ import annotations

from typing import Any

from unit.request.harness import exact_equal, service

from policies.router import RouterThresholds
from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.backends.scripted import Script
from verifiers.judges import RuleJudge

ANSWER = "The answer is \\boxed{5}."
THOUGHT = "So 2 + 3 = 5, and the answer is 5.\n\n"
CHECKS = [
    "Wait, let me double check: 2 + 3 = 5. So the answer is 5.\n\n",
    "Alternatively, count up from 2 three times: 5. So the answer is 5.\n\n",
    "Hmm, is that right? Yes, 2 + 3 = 5. So the answer is 5.\n\n",
]
THINKING = "Let me add them. " + THOUGHT + "".join(CHECKS * 30)
ALWAYS_UNCERTAIN = RouterThresholds(fast_below=0.0, slow_at_or_above=1.0)


class Comparer:
    async def equivalent(self, gold: str, pred: str) -> bool:
        return await exact_equal(gold, pred)


def overthinker(prompt: str, params: SamplingParams) -> Script:
    """Thinks long past its answer; a continuation after the closed thinking just answers."""
    if prompt.rstrip().endswith(("</think>", "**Final Answer**")) or "</think>" in prompt:
        return Script.text(ANSWER, delay_s=0.001)
    return Script.text(THINKING + "</think>\n\n" + ANSWER, delay_s=0.002)


async def test_overthinking_is_cut_and_the_branch_answers_after_the_injected_close() -> None:
    svc = service(overthinker, family="deepseek_r1", judge=RuleJudge(Comparer()))
    async with svc.run():
        r = await svc.chat(max_tokens=4000, tts={"trim": True})
        body = r.json()
        assert r.status_code == 200, body
        assert body["choices"][0]["message"]["content"].strip().endswith(ANSWER)
        thinking = body["choices"][0]["message"]["reasoning_content"]
        assert len(thinking) < len(THINKING) / 2
        first, then = svc.worker.requests[0][1], svc.worker.requests[-1][1]
        assert then.startswith(first)
        assert "</think>" in then[len(first) :]
        record = await svc.record(body["id"])
        [intervention] = record["trims"]["interventions"]
        assert intervention["rule"] == "overthinking", intervention
        assert intervention["preset"] == "deepseek_r1"  # the family's preset decided


async def test_without_trim_the_branch_thinks_to_its_end() -> None:
    svc = service(overthinker, family="deepseek_r1", judge=RuleJudge(Comparer()))
    async with svc.run():
        body = (await svc.chat(max_tokens=4000, tts={"trim": False})).json()
        assert (await svc.record(body["id"]))["trims"] is None
        assert len(svc.worker.requests) == 1
        assert body["choices"][0]["message"]["reasoning_content"].strip() == THINKING.strip()


def moody(fast: list[str]) -> Any:
    """Fast probes answer ``fast[seed]``; slow thinking (a grammar-constrained prompt) thinks."""

    def play(prompt: str, params: SamplingParams) -> Script:
        if params.grammar is not None:
            return Script.text("<think>2 + 3 = 5.</think>\n\n" + ANSWER)
        return Script.text(fast[(params.seed or 0) % len(fast)])

    return play


async def test_fast_mode_answers_without_reasoning() -> None:
    async with service(moody([ANSWER])).run() as svc:
        body = (await svc.chat(tts={"mode": "fast"})).json()
        message = body["choices"][0]["message"]
        assert message["content"] == ANSWER
        assert message.get("reasoning_content") is None
        assert body["tts"]["mode"]["mode"] == "fast"
        assert svc.worker.requests[0][2].grammar is None


async def test_slow_mode_thinks_under_its_grammar() -> None:
    async with service(moody([ANSWER])).run() as svc:
        body = (await svc.chat(tts={"mode": "slow"})).json()
        message = body["choices"][0]["message"]
        assert message["content"].strip() == ANSWER
        assert message["reasoning_content"].strip() == "2 + 3 = 5."
        assert svc.worker.requests[0][2].grammar is not None


async def test_auto_probes_that_agree_stay_fast() -> None:
    modes = {"probe_samples": 3, "on_uncertain": "probe"}
    async with service(moody([ANSWER]), modes=modes).run() as svc:
        resolver = svc.services.orchestrator.modes
        resolver.router = resolver.router.model_copy(update={"thresholds": ALWAYS_UNCERTAIN})
        body = (await svc.chat(tts={"seed": 0, "mode": "auto"})).json()
        assert body["tts"]["mode"]["mode"] == "fast"
        assert body["tts"]["mode"]["stage"] == "probe"
        assert body["choices"][0]["message"]["content"] == ANSWER
        assert len(svc.worker.requests) == 3
        assert all(p.grammar is None for _, _, p in svc.worker.requests)


async def test_auto_probes_that_disagree_escalate_to_slow_thinking() -> None:
    modes = {"probe_samples": 3, "on_uncertain": "probe"}
    fast = [ANSWER, "So it is \\boxed{6}.", "Maybe \\boxed{7}."]
    async with service(moody(fast), modes=modes).run() as svc:
        resolver = svc.services.orchestrator.modes
        resolver.router = resolver.router.model_copy(update={"thresholds": ALWAYS_UNCERTAIN})
        body = (await svc.chat(tts={"seed": 0, "mode": "auto"})).json()
        assert body["tts"]["mode"]["mode"] == "slow"
        assert body["choices"][0]["message"]["content"].strip() == ANSWER
        slow = [p for _, _, p in svc.worker.requests if p.grammar is not None]
        assert len(svc.worker.requests) == 4
        assert len(slow) == 1
        record = await svc.record(body["id"])
        assert record["mode"]["mode"] == "slow"
        assert record["usage"]["completion_tokens"] > 0
