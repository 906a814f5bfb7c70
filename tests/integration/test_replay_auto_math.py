"""`mode: auto` live on MATH-500 problems of the replay pool: the probe's self-check and its cut.

Two known fast answers of Qwen2.5-32B-Instruct: on ``test/intermediate_algebra/2015`` it states
roots that do not solve its own cubic (the service's self-check, ``verifiers.claims``, escalates
it); on ``test/algebra/1837`` it runs away for 32,768 tokens and the probe is cut at the config's
``probe_max_tokens``. Live must decide and spend what offline auto (``evals.routing``, the same
cut) decides and spends.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from benchmarks.auto_live import POOL, ladder_files, probe_max_tokens
from benchmarks.service import RunningService
from evals.pairs import Ladder, load_ladder
from evals.routing import AutoOutcome, outcomes_of
from tests.integration.replay_support import replay_reasoning
from tts_orchestrator.modes.resolution import load_auto_policy

pytestmark = pytest.mark.integration

REFUTED, RUNAWAY = "test/intermediate_algebra/2015.json", "test/algebra/1837.json"
RATE = 6000.0  # tokens/s per stream: QwQ-32B's 17,915 tokens on 2015 in ~3 s


@pytest.fixture(scope="module")
def ladder() -> Ladder:
    fast, slow = ladder_files(POOL, "math500")
    return load_ladder(fast, [slow]).only([REFUTED, RUNAWAY])


@pytest.fixture(scope="module")
def offline(ladder: Ladder) -> dict[str, AutoOutcome]:
    return outcomes_of(load_auto_policy(None), ladder, probe_max_tokens=probe_max_tokens())


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with replay_reasoning(tmp_path_factory, rate=RATE, name="replay-math") as svc:
        yield svc


def ask_auto(service: RunningService, ladder: Ladder, problem_id: str) -> dict[str, object]:
    p = next(p for p in ladder.problems if p.problem_id == problem_id)
    body = {
        "model": POOL,
        "messages": [{"role": "user", "content": p.problem}],
        "tts": {"mode": "auto"},
    }
    r = httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=180)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_fast_answer_its_own_text_refutes_is_escalated_live(
    service: RunningService, ladder: Ladder, offline: dict[str, AutoOutcome]
) -> None:
    assert offline[REFUTED].escalations == (0,)
    data = ask_auto(service, ladder, REFUTED)
    mode = data["tts"]["mode"]  # type: ignore[index]
    assert (mode["mode"], mode["stage"]) == ("slow", "probe"), mode
    assert "claims_refuted → escalate" in mode["reason"]
    assert "does not solve t^{3} - 4 t - 4 = 0" in mode["reason"]
    assert data["usage"]["completion_tokens"] == offline[REFUTED].tokens  # type: ignore[index]


def test_a_runaway_fast_answer_costs_the_probe_cap_live_and_offline(
    service: RunningService, ladder: Ladder, offline: dict[str, AutoOutcome]
) -> None:
    p = next(p for p in ladder.problems if p.problem_id == RUNAWAY)
    assert p.answers[0].tokens == 32768
    data = ask_auto(service, ladder, RUNAWAY)
    mode = data["tts"]["mode"]  # type: ignore[index]
    assert mode["mode"] == "slow", mode
    assert offline[RUNAWAY].answered_by == 1
    assert data["usage"]["completion_tokens"] == offline[RUNAWAY].tokens  # type: ignore[index]
    if offline[RUNAWAY].escalations:  # probed: paid the cut probe, not the 32,768 tokens
        assert offline[RUNAWAY].tokens == probe_max_tokens() + p.answers[1].tokens
