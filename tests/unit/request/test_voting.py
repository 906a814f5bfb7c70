"""Voting over branches through the real route: majority, ties, weights, first finish, stops."""

from __future__ import annotations

from typing import Any

import pytest
from unit.request.harness import Branch, branches, service

FIVE = "So the answer is \\boxed{5}."
SEVEN = "So the answer is \\boxed{7}."
NONE = "I cannot tell."


def _tts(**kw: Any) -> dict[str, Any]:
    return {"seed": 0, **kw}


async def test_majority_wins_and_the_record_keeps_the_vote() -> None:
    async with service(branches(FIVE, SEVEN, FIVE)).run() as svc:
        r = await svc.chat(tts=_tts(n_branches=3))
        body = r.json()
        assert r.status_code == 200, body
        assert body["choices"][0]["message"]["content"] == FIVE
        vote = body["tts"]["vote"]
        assert vote["winner"] == "5"
        assert sorted(c["count"] for c in vote["clusters"]) == [1, 2]
        record = await svc.record(body["id"])
        assert record["vote"]["winner"] == "5"
        assert len(record["branches"]) == 3


async def test_a_tie_goes_to_the_answer_that_finished_first() -> None:
    slow_five = Branch(FIVE, delay_s=0.01)
    async with service(branches(slow_five, SEVEN)).run() as svc:
        body = (await svc.chat(tts=_tts(n_branches=2))).json()
        assert body["tts"]["vote"]["winner"] == "7"
        assert "tie" in body["tts"]["vote"]["reason"]


async def test_unparseable_branches_do_not_vote() -> None:
    async with service(branches(NONE, NONE, SEVEN)).run() as svc:
        body = (await svc.chat(tts=_tts(n_branches=3))).json()
        assert body["tts"]["vote"]["winner"] == "7"
        assert body["tts"]["vote"]["unparseable"] == [0, 1]


async def test_no_parseable_answer_answers_with_the_first_finished_branch() -> None:
    async with service(branches(NONE, Branch("Nothing here.", delay_s=0.01))).run() as svc:
        body = (await svc.chat(tts=_tts(n_branches=2))).json()
        assert body["tts"]["vote"]["winner"] is None
        assert body["choices"][0]["message"]["content"] == NONE


async def test_weighted_vote_follows_token_confidence() -> None:
    confident = Branch(SEVEN, logprob=-0.01)
    unsure = Branch(FIVE, logprob=-3.0)
    async with service(branches(unsure, unsure, confident)).run() as svc:
        majority = (await svc.chat(tts=_tts(n_branches=3))).json()
        weighted = (await svc.chat(tts=_tts(n_branches=3, aggregation="weighted"))).json()
    assert majority["tts"]["vote"]["winner"] == "5"
    assert weighted["tts"]["vote"]["winner"] == "7"


async def test_first_finish_takes_the_first_parseable_answer_and_aborts_the_rest() -> None:
    slow = Branch(FIVE + " and more words" * 50, delay_s=0.005)
    async with service(branches(slow, SEVEN)).run() as svc:
        body = (await svc.chat(tts=_tts(n_branches=2, aggregation="first_finish"))).json()
        assert body["tts"]["vote"]["winner"] == "7"
        assert body["tts"]["early_stop"]["fired"] is True
        assert svc.worker.busy == 0


@pytest.mark.parametrize(
    ("early_stop", "extra"),
    [
        pytest.param("unanimous_window", {"early_stop_window": 2}, id="unanimous-window"),
        pytest.param("beta", {"early_stop_threshold": 0.6}, id="beta"),
        pytest.param("none", {}, id="safe-lead"),
    ],
)
async def test_early_stop_aborts_losers_once_the_vote_is_safe(
    early_stop: str, extra: dict[str, Any]
) -> None:
    straggler = Branch(SEVEN + " padding" * 400, delay_s=0.002)
    specs = (FIVE, FIVE, FIVE, straggler) if early_stop == "none" else (FIVE, FIVE, straggler)
    async with service(branches(*specs)).run() as svc:
        n = len(specs)
        body = (await svc.chat(tts=_tts(n_branches=n, early_stop=early_stop, **extra))).json()
        assert body["tts"]["vote"]["winner"] == "5"
        assert body["tts"]["early_stop"]["fired"] is True, body["tts"]["early_stop"]
        aborted = [b for b in body["tts"]["branches"] if b.get("abort_reason")]
        assert n - 1 in [b["index"] for b in aborted]  # the straggler never finished
        assert svc.worker.busy == 0  # and its slot is free


async def test_without_early_stop_every_branch_runs_to_its_end() -> None:
    async with service(branches(FIVE, SEVEN, Branch(FIVE, delay_s=0.002))).run() as svc:
        body = (await svc.chat(tts=_tts(n_branches=3, early_stop="unanimous_window"))).json()
        assert body["tts"]["early_stop"]["fired"] is False
        assert all(b["finish_reason"] == "stop" for b in body["tts"]["branches"])


async def test_streaming_and_non_streaming_give_the_same_answer() -> None:
    async with service(branches(FIVE, SEVEN, FIVE)).run() as svc:
        whole = (await svc.chat(tts=_tts(n_branches=3))).json()
        events = await svc.stream(tts=_tts(n_branches=3))
    content = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
    )
    assert content == whole["choices"][0]["message"]["content"]
    last = [e for e in events if e.get("choices") and e["choices"][0].get("finish_reason")]
    assert last[-1]["tts"]["vote"]["winner"] == "5"
