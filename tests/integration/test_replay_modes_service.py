"""`mode: auto` live on the replay pool of deploy/configs/replay-reasoning.yaml (real Redis, Ray,
the service as a subprocess): it stays fast or escalates where the offline policy does.

Two known GSM8K problems: on ``gsm8k/0`` the shipped auto policy keeps Qwen2.5-32B-Instruct's
answer; on ``gsm8k/121`` it drops that answer after reading it and QwQ-32B thinks. The expected
decision comes from ``evals.routing.run_auto`` (the offline path), the outcome from the service.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from benchmarks.auto_live import FAST_FILE, PAIRS, POOL, SLOW_FILE
from benchmarks.service import RunningService
from evals.pairs import Ladder, LadderProblem, load_ladder
from evals.routing import AutoOutcome, outcomes_of
from tests.integration.replay_support import replay_reasoning
from tts_orchestrator.modes.resolution import load_auto_policy
from verifiers.traces import Trace, load_traces

pytestmark = pytest.mark.integration

KEPT_FAST, ESCALATED = "gsm8k/0", "gsm8k/121"
RATE = 400.0  # tokens/s per stream: the escalated problem's 584 tokens in ~1.5 s


@pytest.fixture(scope="module")
def ladder() -> Ladder:
    return load_ladder(FAST_FILE, [SLOW_FILE]).only([KEPT_FAST, ESCALATED])


@pytest.fixture(scope="module")
def offline(ladder: Ladder) -> dict[str, AutoOutcome]:
    return outcomes_of(load_auto_policy(None), ladder)


@pytest.fixture(scope="module")
def thinker() -> dict[str, Trace]:
    return {t.problem_id or "": t for t in load_traces([SLOW_FILE])}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with replay_reasoning(tmp_path_factory, rate=RATE, name="replay-modes") as svc:
        yield svc


def problem(ladder: Ladder, problem_id: str) -> LadderProblem:
    return next(p for p in ladder.problems if p.problem_id == problem_id)


def ask(service: RunningService, text: str, **tts: Any) -> dict[str, Any]:
    body = {"model": POOL, "messages": [{"role": "user", "content": text}], "tts": tts}
    r = httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_the_offline_policy_keeps_one_and_escalates_the_other(
    offline: dict[str, AutoOutcome],
) -> None:
    assert offline[KEPT_FAST].answered_by == 0
    assert offline[KEPT_FAST].started_at == 0
    assert offline[ESCALATED].escalations == (0,)
    assert offline[ESCALATED].answered_by == 1


def test_auto_stays_fast_where_offline_keeps_the_fast_answer(
    service: RunningService, ladder: Ladder
) -> None:
    p = problem(ladder, KEPT_FAST)
    data = ask(service, p.problem, mode="auto")
    message, mode = data["choices"][0]["message"], data["tts"]["mode"]
    assert (mode["mode"], mode["stage"]) == ("fast", "probe"), mode
    assert message["reasoning_content"] is None
    assert message["content"].strip() == p.answers[0].text.strip()
    assert data["usage"]["completion_tokens"] == p.answers[0].tokens


def test_auto_escalates_where_offline_does(
    service: RunningService, ladder: Ladder, thinker: dict[str, Trace]
) -> None:
    p = problem(ladder, ESCALATED)
    data = ask(service, p.problem, mode="auto")
    message, mode = data["choices"][0]["message"], data["tts"]["mode"]
    assert (mode["mode"], mode["stage"]) == ("slow", "probe"), mode
    trace = thinker[ESCALATED]
    assert message["reasoning_content"].strip() == trace.thinking_text.strip()
    assert message["content"].strip() == p.answers[1].text.strip()
    fast, slow = (a.tokens for a in p.answers)
    assert data["usage"]["completion_tokens"] == fast + slow, "the probe is paid for too"


def test_fast_and_slow_requests_serve_their_recordings(
    service: RunningService, ladder: Ladder, thinker: dict[str, Trace]
) -> None:
    p = problem(ladder, ESCALATED)
    fast = ask(service, p.problem, mode="fast")["choices"][0]["message"]
    slow = ask(service, p.problem, mode="slow")["choices"][0]["message"]
    assert fast["reasoning_content"] is None
    assert fast["content"].strip() == p.answers[0].text.strip()
    assert slow["reasoning_content"].strip() == thinker[ESCALATED].thinking_text.strip()


def test_the_latency_budget_spans_the_probe_and_the_slow_phase(
    service: RunningService, ladder: Ladder
) -> None:
    """The budget counts from the request's start: the probe (177 tokens, ~0.45 s) eats into it,
    and the slow phase is cut when it runs out."""
    p = problem(ladder, ESCALATED)
    budget = 1.0
    started = time.perf_counter()
    data = ask(service, p.problem, mode="auto", latency_budget_s=budget)
    elapsed = time.perf_counter() - started
    mode = data["tts"]["mode"]
    assert (mode["mode"], mode["stage"]) == ("slow", "probe"), mode
    fast, slow = (a.tokens for a in p.answers)
    spent = data["usage"]["completion_tokens"]
    assert fast < spent < fast + slow, "cut inside the slow phase"
    # The probe took fast / RATE of the budget: the slow phase had only the rest (a budget
    # restarted for it would let it stream ~RATE tokens, nearly all 407).
    assert spent - fast <= budget * RATE - fast + 20
    assert elapsed < budget + 3.0


def test_a_streamed_escalation_sends_the_thinking_as_reasoning_deltas(
    service: RunningService, ladder: Ladder, thinker: dict[str, Trace]
) -> None:
    """The probe's text is held back; the stream is the slow phase, split as recorded."""
    p = problem(ladder, ESCALATED)
    body = {
        "model": POOL,
        "messages": [{"role": "user", "content": p.problem}],
        "tts": {"mode": "auto"},
        "stream": True,
    }
    reasoning, content = [], []
    with httpx.stream("POST", f"{service.url}/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            for choice in json.loads(line[5:]).get("choices") or []:
                delta = choice.get("delta") or {}
                reasoning.append(delta.get("reasoning_content") or "")
                content.append(delta.get("content") or "")
    assert "".join(reasoning).strip() == thinker[ESCALATED].thinking_text.strip()
    assert "".join(content).strip() == p.answers[1].text.strip()


def test_a_problem_nobody_recorded_is_a_worker_error(service: RunningService) -> None:
    body = {"model": POOL, "messages": [{"role": "user", "content": "What is 2 + 3?"}]}
    r = httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 502
    assert "the prompt contains the problem of none of its" in r.json()["error"]["message"]


def test_the_r1_pool_serves_its_own_thinker(service: RunningService, ladder: Ladder) -> None:
    r1 = {t.problem_id: t for t in load_traces([PAIRS["r1-distill-qwen-32b"]])}[ESCALATED]
    p = problem(ladder, ESCALATED)
    body = {
        "model": "r1-distill-qwen-32b",
        "messages": [{"role": "user", "content": p.problem}],
        "tts": {"mode": "slow"},
    }
    r = httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert message["reasoning_content"].strip() == r1.thinking_text.strip()
    assert message["content"].strip() == r1.answer_text.strip()
