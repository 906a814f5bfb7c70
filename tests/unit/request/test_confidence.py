"""DeepConf through the real route: confidence-weighted votes, pruning, consensus, the 400s,
stream progress and the `tts.tokens` block."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from unit.request.harness import Branch, branches, service, settings, until

from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.backends.scripted import Script

FIVE = "So the answer is \\boxed{5}."
SEVEN = "So the answer is \\boxed{7}."
LONG = "Let me think about this slowly, one careful word after another. " * 12 + FIVE


def _tts(**kw: Any) -> dict[str, Any]:
    return {"seed": 0, **kw}


async def test_the_confident_minority_outweighs_an_unsure_majority() -> None:
    specs = [
        Branch(FIVE, confidence=1.0),
        Branch(FIVE, confidence=1.0),
        Branch(SEVEN, confidence=5),
    ]
    async with service(branches(*specs)).run() as svc:
        r = await svc.chat(tts=_tts(n_branches=3, aggregation="confidence"))
        body = r.json()
        assert r.status_code == 200, body
        assert body["choices"][0]["message"]["content"] == SEVEN
        assert body["tts"]["vote"]["reason"].startswith("confidence: confidence 5.000 of 7.000")
        confidences = [b["confidence"] for b in body["tts"]["branches"]]
        assert [c["weight"] for c in confidences] == [1.0, 1.0, 5.0]
        assert {c["source"] for c in confidences} == {"top_k"}
        # The engine was asked for DeepConf's top-k logprobs (the default k).
        assert {p.logprobs for _, _, p in svc.worker.requests} == {20}
        record = await svc.record(body["id"])
        assert [b["confidence"] for b in record["branches"]] == [1.0, 1.0, 5.0]

        majority = (await svc.chat(tts=_tts(n_branches=3))).json()
        assert majority["choices"][0]["message"]["content"] == FIVE


async def test_keep_leaves_the_least_confident_out_of_the_vote() -> None:
    specs = [
        Branch(FIVE, confidence=3.0),
        Branch(FIVE, confidence=3.0),
        Branch(SEVEN, confidence=4),
    ]
    async with service(branches(*specs)).run() as svc:
        tts = _tts(n_branches=3, aggregation="confidence")
        assert (await svc.chat(tts=tts)).json()["tts"]["vote"]["winner"] == "5"
        body = (await svc.chat(tts={**tts, "confidence": {"keep": 0.34}})).json()
        assert body["tts"]["vote"]["winner"] == "7"
        assert body["tts"]["vote"]["filtered"] == [1]


def _pruning_run() -> Any:
    """Branches 0 and 1 (sure, disagreeing) finish first and set the threshold at 5; branch 2
    thinks long at confidence 1 and is pruned; branch 3 (sure) finishes later."""
    return branches(
        Branch(FIVE, confidence=5.0),
        Branch(SEVEN, confidence=5.0, delay_s=0.001),
        Branch(LONG, confidence=1.0, delay_s=0.004),
        Branch(FIVE, confidence=5.0, delay_s=0.02),
    )


PRUNING = {"window": 4, "warmup": 2, "prune_keep": 0.5, "tau": 0.95}


async def test_a_low_confidence_branch_is_pruned_and_its_slot_freed() -> None:
    async with service(_pruning_run()).run() as svc:
        tts = _tts(n_branches=4, early_stop="confidence", confidence=PRUNING)
        r = await svc.chat(tts=tts)
        body = r.json()
        assert r.status_code == 200, body
        detail = body["tts"]
        assert [b["pruned"] for b in detail["branches"]] == [False, False, True, False]
        pruned = detail["branches"][2]
        assert pruned["abort_reason"].startswith("pruned: group confidence 1.000 < threshold 5")
        assert 0 < pruned["tokens"] < len(LONG.split())
        assert detail["confidence"]["threshold"] == 5.0
        assert detail["tokens"]["pruned"] == pruned["tokens"]
        assert detail["tokens"]["generated"] == body["usage"]["completion_tokens"]
        assert body["choices"][0]["message"]["content"] == FIVE  # 2 sure votes against 1
        assert any(a.endswith("/2") for a in svc.worker.aborted)
        assert svc.worker.busy == 0
        record = await svc.record(body["id"])
        assert [b["pruned"] for b in record["branches"]] == [False, False, True, False]
        assert record["tokens"]["pruned"] == pruned["tokens"]
        metrics = (await svc.client.get("/metrics")).text
        assert 'tts_branches_aborted_total{reason="confidence_prune"} 1.0' in metrics
        assert f"tts_pruned_tokens_total {float(pruned['tokens'])}" in metrics
        saved = detail["tokens"]["saved_by_pruning_estimate"]
        assert saved > 0
        assert f"tts_pruning_saved_tokens_estimate_total {float(saved)}" in metrics


async def test_without_early_stop_no_branch_is_pruned() -> None:
    async with service(_pruning_run()).run() as svc:
        tts = _tts(n_branches=4, aggregation="confidence", confidence=PRUNING)
        body = (await svc.chat(tts=tts)).json()
        assert not any(b["pruned"] for b in body["tts"]["branches"])
        assert body["tts"]["branches"][2]["finish_reason"] == "stop"


async def test_the_request_ends_when_the_weighted_leader_passes_tau() -> None:
    specs = [
        Branch(FIVE, confidence=5.0),
        Branch(FIVE, confidence=5.0, delay_s=0.001),
        Branch(LONG, confidence=5.0, delay_s=0.004),
    ]
    async with service(branches(*specs)).run() as svc:
        tts = _tts(n_branches=3, early_stop="confidence", confidence=PRUNING)
        body = (await svc.chat(tts=tts)).json()
        stop = body["tts"]["early_stop"]
        assert stop["fired"]
        assert "leader share 1.000 >= 0.95" in stop["reason"]
        third = body["tts"]["branches"][2]
        assert third["aborted"]
        assert not third["pruned"]


async def test_the_stream_reports_progress_and_the_stock_fields_stay() -> None:
    async with service(_pruning_run()).run() as svc:
        tts = _tts(n_branches=4, early_stop="confidence", confidence=PRUNING)
        events = await svc.stream(tts=tts, stream_options={"include_usage": True})
        progress = [e["tts"]["progress"] for e in events if "progress" in e.get("tts", {})]
        assert progress[0] == {"alive": 3, "pruned": 0, "finished": 1, "leader": "5", "share": 1.0}
        assert any(p["pruned"] == 1 for p in progress)
        assert progress[-1]["alive"] == 0
        assert all(e["choices"][0]["delta"] == {} for e in events if "progress" in e.get("tts", {}))
        content = "".join(
            e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]
        )
        assert content == FIVE


ONLINE = {**PRUNING, "warmup_first": True}
WARMUP_S = 0.01  # per token of the warm-up branches: 6 tokens take 60 ms


def _timed(
    play: Callable[[str, SamplingParams], Script],
) -> tuple[Callable[[str, SamplingParams], Script], dict[int, float]]:
    """The script, and when the engine was first asked for each branch (by seed)."""
    asked: dict[int, float] = {}

    def timed(prompt: str, params: SamplingParams) -> Script:
        asked.setdefault(params.seed or 0, time.monotonic())
        return play(prompt, params)

    return timed, asked


def _online_run() -> Callable[[str, SamplingParams], Script]:
    """Branches 0 and 1 (sure, disagreeing, slow) are the warm-up and set the threshold at 5;
    branch 2 is fast and unsure, branch 3 fast and sure."""
    return branches(
        Branch(FIVE, confidence=5.0, delay_s=WARMUP_S),
        Branch(SEVEN, confidence=5.0, delay_s=WARMUP_S),
        Branch(SEVEN, confidence=1.0),
        Branch(FIVE, confidence=5.0),
    )


@pytest.mark.parametrize("warmup_first", [True, False], ids=["warmup-first", "all-at-once"])
async def test_warmup_first_starts_the_rest_once_the_threshold_exists(warmup_first: bool) -> None:
    play, asked = _timed(_online_run())
    async with service(play).run() as svc:
        conf = {**PRUNING, "warmup_first": warmup_first}
        body = (
            await svc.chat(tts=_tts(n_branches=4, early_stop="confidence", confidence=conf))
        ).json()
        ids = [request_id for request_id, _, _ in svc.worker.requests]
        detail = body["tts"]
        started_late = asked[2] - asked[0] >= 5 * WARMUP_S and asked[3] - asked[0] >= 5 * WARMUP_S
        if not warmup_first:  # branch 2 finishes first, warms the gate up and is never pruned
            assert not started_late
            assert not any(b["pruned"] for b in detail["branches"])
            return
        # Branches 2 and 3 were asked of the engine only after the warm-up finished, in a job
        # of their own; branch 2 was pruned at its first full window (4 tokens).
        assert started_late, asked
        assert [i.rsplit("/", 1)[0].endswith(".w") for i in ids] == [False, False, True, True]
        assert [b["pruned"] for b in detail["branches"]] == [False, False, True, False]
        assert detail["branches"][2]["tokens"] == PRUNING["window"]
        assert detail["confidence"]["warmup_first"] is True
        assert detail["confidence"]["threshold"] == 5.0
        assert body["choices"][0]["message"]["content"] == FIVE
        assert svc.worker.busy == 0


async def test_warmup_first_starts_nothing_once_the_warmup_agrees() -> None:
    sure = Branch(FIVE, confidence=5.0)
    play = branches(sure, sure, Branch(LONG, confidence=5.0))
    async with service(play).run() as svc:
        tts = _tts(n_branches=3, early_stop="confidence", confidence=ONLINE)
        body = (await svc.chat(tts=tts)).json()
        assert body["tts"]["early_stop"]["fired"]
        assert len(svc.worker.requests) == 2  # branch 2 never reached the engine
        third = body["tts"]["branches"][2]
        assert (third["aborted"], third["tokens"]) == (True, 0)
        assert body["usage"]["completion_tokens"] == 2 * len(FIVE.split())


ENDLESS = Branch("word " * 5000, confidence=5.0, delay_s=0.01)


@pytest.mark.parametrize("during", ["warmup", "after"])
async def test_a_disconnect_cancels_waiting_and_started_branches(during: str) -> None:
    sure = Branch(FIVE, confidence=5.0)
    warmup = [ENDLESS, ENDLESS] if during == "warmup" else [sure, Branch(SEVEN, confidence=5.0)]
    async with service(branches(*warmup, ENDLESS, ENDLESS)).run() as svc:
        tts = _tts(n_branches=4, early_stop="confidence", confidence=ONLINE)
        call, gone, sent = svc.streaming_call(tts=tts)
        asked = 2 if during == "warmup" else 4
        await until(lambda: len(svc.worker.requests) == asked and svc.worker.busy == 2)
        gone.set()
        await asyncio.wait_for(call, 2.0)
        await until(lambda: svc.worker.busy == 0)
        assert sent[0]["status"] == 200
        await asyncio.sleep(0.05)  # nothing starts after the client left
        assert len(svc.worker.requests) == asked
        running = [i for i, _, _ in svc.worker.requests][asked - 2 :]
        assert sorted(svc.worker.aborted) == sorted(running)
        request_id = svc.worker.requests[0][0].rsplit("/", 1)[0]
        record = await svc.record(request_id)
        assert record["status"] == "cancelled"


async def test_the_threshold_vote_hears_the_branches_at_or_above_the_threshold() -> None:
    specs = [
        Branch(FIVE, confidence=3.0),
        Branch(SEVEN, confidence=5.0, delay_s=0.001),
        Branch(FIVE, confidence=4.5, delay_s=0.004),
        Branch(FIVE, confidence=4.5, delay_s=0.004),
    ]
    async with service(branches(*specs)).run() as svc:
        conf = {"warmup": 2, "keep": 0.5, "prune_keep": 0.5}
        tts = _tts(n_branches=4, aggregation="confidence", confidence=conf)
        # The η most confident half: 7 (5.0) beats one 5 (4.5).
        assert (await svc.chat(tts=tts)).json()["tts"]["vote"]["winner"] == "7"
        # The warm-up (3.0, 5.0) sets the threshold at 4: branch 0 is left out, the later
        # branches at 4.5 all vote, 5 wins 9.0 to 5.0.
        body = (await svc.chat(tts={**tts, "confidence": {**conf, "vote": "threshold"}})).json()
        vote = body["tts"]["vote"]
        assert (vote["winner"], vote["filtered"]) == ("5", [0])
        assert body["tts"]["confidence"]["threshold"] == 4.0
        # The default prune_keep (0.1) puts the threshold at the warm-up's 90th percentile,
        # 4.8: the branches at 4.5 are left out too, whatever `keep` says.
        for keep in (0.5, 1.0):
            conf = {"warmup": 2, "keep": keep, "vote": "threshold"}
            body = (await svc.chat(tts={**tts, "confidence": conf})).json()
            assert body["tts"]["vote"]["filtered"] == [0, 2, 3]
            assert body["tts"]["vote"]["winner"] == "7"
            assert body["tts"]["confidence"]["threshold"] == 4.8


async def test_prune_keep_prunes_and_keep_still_filters_the_vote() -> None:
    """Two roles, two settings: prune_keep puts the threshold (here between the warm-up's 3.0
    and 5.0), keep the share of finished branches that votes."""
    specs = [
        Branch(FIVE, confidence=3.0),
        Branch(SEVEN, confidence=5.0, delay_s=0.001),
        Branch(LONG, confidence=4.5, delay_s=0.004),
        Branch(FIVE, confidence=3.2, delay_s=0.004),
    ]
    async with service(branches(*specs)).run() as svc:
        base = {"window": 4, "warmup": 2, "warmup_first": True}
        tts = _tts(n_branches=4, aggregation="confidence", early_stop="confidence")
        for prune_keep, keep, pruned, winner in [
            (0.1, 1.0, [False, False, True, True], "7"),  # threshold 4.8: 4.5 and 3.2 pruned
            (0.5, 1.0, [False, False, False, True], "5"),  # threshold 4.0: 5 wins 3+4.5 to 5
            (0.5, 0.25, [False, False, False, True], "7"),  # the top quarter alone votes: 7
        ]:
            conf = {**base, "prune_keep": prune_keep, "keep": keep}
            body = (await svc.chat(tts={**tts, "confidence": conf})).json()
            detail = body["tts"]
            assert [b["pruned"] for b in detail["branches"]] == pruned, (prune_keep, keep)
            assert detail["vote"]["winner"] == winner, (prune_keep, keep)
            assert (detail["confidence"]["prune_keep"], detail["confidence"]["keep"]) == (
                prune_keep,
                keep,
            )


@pytest.mark.parametrize(
    ("tts", "param"),
    [
        pytest.param(
            {"aggregation": "confidence", "confidence": {"windw": 8}},
            "tts.confidence.windw",
            id="typo",
        ),
        pytest.param(
            {"aggregation": "confidence", "confidence": {"keep": 0}},
            "tts.confidence.keep",
            id="keep-0",
        ),
        pytest.param(
            {"early_stop": "confidence", "confidence": {"prune_keep": 0}},
            "tts.confidence.prune_keep",
            id="prune-keep-0",
        ),
        pytest.param(
            {"early_stop": "confidence", "confidence": {"prune_keep": 1.5}},
            "tts.confidence.prune_keep",
            id="prune-keep-above-1",
        ),
        pytest.param(
            {"early_stop": "confidence", "confidence": {"prune_keep": "most"}},
            "tts.confidence.prune_keep",
            id="prune-keep-not-a-number",
        ),
        pytest.param(
            {"early_stop": "confidence", "confidence": {"tau": 0.4}}, "tts.confidence.tau", id="tau"
        ),
        pytest.param({"confidence": {"window": 8}}, "tts.confidence", id="unused-settings"),
        pytest.param(
            {"aggregation": "confidence", "confidence": {"vote": "best"}},
            "tts.confidence.vote",
            id="vote",
        ),
        pytest.param(
            {"early_stop": "confidence", "confidence": {"warmup_first": "yes"}},
            "tts.confidence.warmup_first",
            id="warmup-first-not-a-bool",
        ),
    ],
)
async def test_bad_confidence_settings_are_400_naming_the_field(
    tts: dict[str, Any], param: str
) -> None:
    async with service(branches(FIVE)).run() as svc:
        r = await svc.chat(tts=_tts(n_branches=2, **tts))
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("option", [{"aggregation": "confidence"}, {"early_stop": "confidence"}])
async def test_a_pool_without_logprobs_refuses_the_confidence_options(
    option: dict[str, str],
) -> None:
    svc = service(branches(FIVE))
    data = settings().model_dump()
    data["pools"][0]["logprobs"] = False
    svc.settings = type(svc.settings).model_validate(data)
    async with svc.run():
        r = await svc.chat(tts=_tts(n_branches=2, **option))
        error = r.json()["error"]
        assert r.status_code == 400
        assert error["code"] == "logprobs_unavailable"
        assert error["param"] == f"tts.{next(iter(option))}"
        assert "returns no per-token logprobs" in error["message"]
        assert not svc.worker.requests


async def test_server_defaults_apply_and_a_request_overrides_them() -> None:
    defaults = {"confidence": {"top_logprobs": 5, "keep": 0.34}}
    specs = [
        Branch(FIVE, confidence=3.0),
        Branch(FIVE, confidence=3.0),
        Branch(SEVEN, confidence=4),
    ]
    async with service(branches(*specs), tts=defaults).run() as svc:
        tts = _tts(n_branches=3, aggregation="confidence")
        body = (await svc.chat(tts=tts)).json()
        assert body["tts"]["vote"]["winner"] == "7"  # the server's keep=0.34
        assert body["tts"]["confidence"]["keep"] == 0.34
        # The rest are the service's defaults: DeepConf's online settings.
        assert (body["tts"]["confidence"]["prune_keep"], body["tts"]["confidence"]["tau"]) == (
            0.1,
            0.95,
        )
        assert body["tts"]["confidence"]["warmup_first"] is True
        assert {p.logprobs for _, _, p in svc.worker.requests} == {5}
        body = (await svc.chat(tts={**tts, "confidence": {"keep": 1.0}})).json()
        assert body["tts"]["vote"]["winner"] == "5"
