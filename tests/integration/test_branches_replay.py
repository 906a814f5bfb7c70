"""Branch-parallel votes, early stops and budgets, deterministic on the replay engine."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from benchmarks.service import RunningService

pytestmark = pytest.mark.integration


def ask(service: RunningService, problem: str, **tts: Any) -> dict[str, Any]:
    body = {
        "model": "replay",
        "messages": [{"role": "user", "content": problem}],
        "tts": {"seed": 0, **tts},
    }
    r = httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def clusters(resp: dict[str, Any]) -> dict[str, list[int]]:
    return {c["answer"]: c["branches"] for c in resp["tts"]["vote"]["clusters"]}


def test_equivalent_but_different_answers_share_a_cluster(replay_service: RunningService) -> None:
    r = ask(replay_service, "VOTE-EQUIV: what is one half?", n_branches=4)
    vote = r["tts"]["vote"]
    assert vote["winner"] == "\\frac{1}{2}"
    assert clusters(r) == {"\\frac{1}{2}": [0, 1], "3": [2]}
    assert vote["unparseable"] == [3]
    assert "\\boxed{\\frac{1}{2}}" in r["choices"][0]["message"]["content"]
    assert r["choices"][0]["finish_reason"] == "stop"
    assert r["tts"]["early_stop"]["fired"] is False
    assert len(r["tts"]["branches"]) == 4
    assert not any(b["aborted"] for b in r["tts"]["branches"])


def test_tie_goes_to_the_earliest_finish(replay_service: RunningService) -> None:
    r = ask(replay_service, "VOTE-TIE: pick a number.", n_branches=2)
    assert r["tts"]["vote"]["winner"] == "4"
    assert "tie" in r["tts"]["vote"]["reason"]


def test_unparseable_answers_never_win(replay_service: RunningService) -> None:
    r = ask(replay_service, "VOTE-UNPARSEABLE: what is seven?", n_branches=3)
    assert r["tts"]["vote"]["winner"] == "7"
    assert r["tts"]["vote"]["unparseable"] == [0, 1]


@pytest.mark.parametrize(
    ("problem", "tts", "fires", "winner"),
    [
        pytest.param(
            "VOTE-AGREE: what is nine?",
            {"early_stop": "unanimous_window", "early_stop_window": 3, "aggregation": "weighted"},
            True,
            "9",
            id="window-fires",
        ),
        pytest.param(
            "VOTE-DISAGREE: what is ten?",
            {"early_stop": "unanimous_window", "early_stop_window": 3, "aggregation": "weighted"},
            False,
            "9",
            id="window-does-not-fire",
        ),
        pytest.param(
            "VOTE-AGREE: what is nine?",
            {"early_stop": "beta", "early_stop_threshold": 0.9, "aggregation": "weighted"},
            True,
            "9",
            id="beta-fires",
        ),
        pytest.param(
            "VOTE-DISAGREE: what is ten?",
            {"early_stop": "beta", "early_stop_threshold": 0.9, "aggregation": "weighted"},
            False,
            None,
            id="beta-does-not-fire",
        ),
        pytest.param(
            "VOTE-AGREE: what is nine?", {"early_stop": "none"}, True, "9", id="majority-safe-lead"
        ),
        pytest.param(
            "VOTE-AGREE: what is nine?",
            {"early_stop": "none", "aggregation": "weighted"},
            False,
            "9",
            id="none-does-not-fire",
        ),
    ],
)
def test_early_stop_rules(
    replay_service: RunningService,
    problem: str,
    tts: dict[str, Any],
    fires: bool,
    winner: str | None,
) -> None:
    r = ask(replay_service, problem, n_branches=5, **tts)
    early = r["tts"]["early_stop"]
    assert early["fired"] is fires, early
    branches = r["tts"]["branches"]
    if fires:
        assert [b["index"] for b in branches if b["aborted"]] == [3, 4]
        assert all("early stop" in b["abort_reason"] for b in branches if b["aborted"])
        assert r["tts"]["timings"]["decided_s"] < 2.0
    else:
        assert not any(b["aborted"] for b in branches)
    if winner is not None:
        assert r["tts"]["vote"]["winner"] == winner
    record = httpx.get(f"{replay_service.url}/v1/requests/{r['id']}").json()
    assert record["vote"]["winner"] == r["tts"]["vote"]["winner"]
    assert [b["aborted"] for b in record["branches"]] == [b["aborted"] for b in branches]


def test_first_finish_takes_the_first_parseable_answer(replay_service: RunningService) -> None:
    r = ask(
        replay_service, "VOTE-UNPARSEABLE: what is seven?", n_branches=3, aggregation="first_finish"
    )
    assert r["tts"]["vote"]["winner"] == "7"
    r = ask(replay_service, "VOTE-DISAGREE: what is ten?", n_branches=5, aggregation="first_finish")
    assert r["tts"]["vote"]["winner"] == "9"
    assert r["tts"]["early_stop"]["fired"]


def test_latency_budget_answers_with_best_vote_so_far(replay_service: RunningService) -> None:
    start = time.monotonic()
    r = ask(replay_service, "VOTE-SLOW: what is eight?", n_branches=4, latency_budget_s=1.5)
    elapsed = time.monotonic() - start
    assert 1.4 < elapsed < 4.0
    assert r["tts"]["budget_reached"] is True
    assert r["tts"]["vote"]["winner"] == "8"
    assert [b["aborted"] for b in r["tts"]["branches"]] == [False, True, True, True]
    usage = r["usage"]
    assert usage["completion_tokens"] == sum(b["tokens"] for b in r["tts"]["branches"])


def test_stream_through_openai_client(replay_service: RunningService) -> None:
    client = openai.OpenAI(base_url=f"{replay_service.url}/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "VOTE-EQUIV: what is one half?"}]
    chunks = list(
        client.chat.completions.create(
            model="replay",
            messages=messages,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
            extra_body={"tts": {"n_branches": 4, "seed": 0}},
        )
    )
    kinds = []
    for c in chunks:
        if not c.choices:
            continue
        d = c.choices[0].delta
        if getattr(d, "reasoning_content", None):
            kinds.append("reasoning")
        if d.content:
            kinds.append("content")
    assert kinds.count("reasoning") >= 3
    assert "content" in kinds
    assert kinds.index("content") > max(i for i, k in enumerate(kinds) if k == "reasoning")
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish[0].choices[0].finish_reason == "stop"
    detail = finish[0].model_extra["tts"]  # type: ignore[index]
    assert detail["n_branches"] == 4
    assert detail["vote"]["winner"] == "\\frac{1}{2}"
    usage = chunks[-1].usage
    single = client.chat.completions.create(
        model="replay",
        messages=messages,  # type: ignore[arg-type]
        extra_body={"tts": {"seed": 0}},
    )
    assert usage is not None
    assert single.usage is not None
    assert usage.prompt_tokens == 4 * single.usage.prompt_tokens


@pytest.mark.parametrize(
    ("tts", "param"),
    [
        pytest.param({"n_branches": 0}, "tts.n_branches", id="zero"),
        pytest.param({"n_branches": 10_000}, "tts.n_branches", id="over-cap"),
        pytest.param({"aggregation": "mode"}, "tts.aggregation", id="bad-aggregation"),
        pytest.param({"early_stop": "sometimes"}, "tts.early_stop", id="bad-rule"),
        pytest.param({"latency_budget_s": -1}, "tts.latency_budget_s", id="negative-budget"),
        pytest.param({"pool": "nope"}, "tts.pool", id="unknown-pool"),
    ],
)
def test_invalid_tts_values_name_the_field(
    replay_service: RunningService, tts: dict[str, Any], param: str
) -> None:
    body = {"model": "replay", "messages": [{"role": "user", "content": "x"}], "tts": tts}
    r = httpx.post(f"{replay_service.url}/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("n_branches", [1, 3])
def test_thinking_budget_cuts_and_continues(
    replay_service: RunningService, n_branches: int
) -> None:
    r = ask(
        replay_service,
        "VOTE-SLOW: what is eight?",
        n_branches=n_branches,
        thinking_budget=60,
        seed=1,
    )
    message = r["choices"][0]["message"]
    assert "I have thought about this long enough" in message["reasoning_content"]
    assert "\\boxed{" in message["content"]
    record = httpx.get(f"{replay_service.url}/v1/requests/{r['id']}").json()
    ivs = record["trims"]["interventions"]
    assert {iv["branch"] for iv in ivs} == set(range(n_branches))
    injected = len("I have thought about this long enough; time to give the answer.".split())
    for iv in ivs:
        assert iv["rule"] == "thinking_budget"
        assert 60 <= iv["thinking_tokens"] < 80
    # A continuation the decided vote aborted before its first token reports no usage; every
    # one that ran re-sent prompt + generated text, so only the injected text was new.
    ran = [iv for iv in ivs if "cached_prompt_tokens" in iv]
    assert ran
    for iv in ran:
        assert iv["cached_prompt_tokens"] >= iv["continuation_prompt_tokens"] - 2 * injected - 4
