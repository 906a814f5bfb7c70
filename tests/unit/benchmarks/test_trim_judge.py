"""The judge precision / recall benchmark: labels, counts, the LLM scoring call, the hybrid."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from benchmarks.trim_judge import (
    CachedScore,
    Counts,
    Item,
    LlmRun,
    _stable_pick,
    concludes,
    http_score,
    llm_server,
    llm_table,
    measure_llm,
)
from verifiers.intermediate import AnswerStrength
from verifiers.judges import JudgeContext, LlmJudge
from verifiers.segmentation import Thought


def unit(text: str) -> Thought:
    return Thought(index=0, start=0, end=len(text), text=text)


@pytest.mark.parametrize(
    ("text", "final", "label"),
    [
        pytest.param("So the answer is $25,000 per year.", "25000", True, id="money"),
        pytest.param("Then 250 tiles cost 3000.", "25", False, id="digits-inside-a-number"),
        pytest.param("So x = \\dfrac{400}{11}.", "\\frac{400}{11}", True, id="dfrac"),
        pytest.param(
            "The answer is 5. I check. I add. I compare.", "5", False, id="beyond-the-tail"
        ),
    ],
)
def test_gold_label_reads_the_final_answer_in_the_tail(text: str, final: str, label: bool) -> None:
    assert concludes(unit(text), final) is label


def test_counts_precision_and_recall() -> None:
    c = Counts()
    for predicted, gold in [(True, True), (True, False), (False, True), (False, False)]:
        c.add(predicted, gold)
    assert (c.tp, c.fp, c.fn, c.tn, c.checks) == (1, 1, 1, 1, 4)
    assert c.precision == c.recall == 0.5


async def test_http_score_reads_llama_cpp_top_logprobs() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["max_tokens"] == 1
        assert body["logprobs"] == 10
        top = [{"token": " Yes", "logprob": -0.1}, {"token": " No", "logprob": -2.3}]
        return httpx.Response(
            200, json={"choices": [{"logprobs": {"content": [{"top_logprobs": top}]}}]}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        scores = await http_score(client, "http://judge")("prompt")
    assert scores == {" Yes": -0.1, " No": -2.3}


async def test_hybrid_asks_the_llm_only_when_the_rule_is_unsure() -> None:
    asked: list[str] = []

    async def score(prompt: str) -> Mapping[str, float]:
        asked.append(prompt)
        return {"Yes": -0.1, "No": -3.0}  # the LLM always says Yes

    context = JudgeContext(problem="How many?")
    items = [
        # Stated answer: the rule is sure (Yes), the LLM is not asked by the hybrid.
        Item(unit("The answer is 4."), context, True, True, AnswerStrength.STATED),
        # No candidate at all: the rule is sure (No).
        Item(unit("Let me think."), context, False, False, None),
        # A concluding sentence about something: the rule is unsure, the LLM decides (Yes).
        Item(unit("So the total is 4."), context, True, False, AnswerStrength.EXPRESSION),
    ]
    results = await measure_llm(items, LlmJudge(score))
    assert len(asked) == 3  # the LLM column checks every item
    assert results["llm"].calls == 3
    assert results["hybrid"].calls == 1
    assert (results["rule"].tp, results["rule"].fn) == (1, 1)
    assert (results["hybrid"].tp, results["hybrid"].fn, results["hybrid"].tn) == (2, 0, 1)


def test_gold_label_keeps_word_answers_in_text() -> None:
    assert concludes(unit("So he walks \\text{east}."), "\\text{east}")


async def test_cached_score_asks_once_and_replays_the_recorded_cost(tmp_path: Path) -> None:
    asked: list[str] = []

    async def score(prompt: str) -> Mapping[str, float]:
        asked.append(prompt)
        return {"Yes": -0.2, "No": -1.9}

    path = tmp_path / "llm.jsonl"
    first = CachedScore(score, path, "m")
    assert await first("p") == {"Yes": -0.2, "No": -1.9}
    recorded = json.loads(path.read_text())["seconds"]
    # A new run reads the file: the same prompt costs no call, and brings its measured seconds.
    again = CachedScore(score, path, "m")
    assert await again("p") == {"Yes": -0.2, "No": -1.9}
    assert asked == ["p"]
    assert (again.hits, again.recorded_s) == (1, recorded)
    # Another model or prompt is a miss.
    await CachedScore(score, path, "other")("p")
    await again("q")
    assert asked == ["p", "p", "q"]


async def test_cached_answers_count_their_recorded_cost(tmp_path: Path) -> None:
    async def score(prompt: str) -> Mapping[str, float]:
        return {"Yes": -0.1, "No": -3.0}

    path = tmp_path / "llm.jsonl"
    item = Item(unit("So the total is 4."), JudgeContext(problem="How many?"), True, False, None)
    await measure_llm([item], LlmJudge(CachedScore(score, path, "m")))
    row = json.loads(path.read_text())
    row["seconds"] = 7.0  # as if the call had taken 7 s when it was made
    path.write_text(json.dumps(row) + "\n")
    cache = CachedScore(score, path, "m")
    results = await measure_llm([item], LlmJudge(cache), cache)
    assert cache.hits == 1
    assert results["llm"].seconds >= 7.0


def test_stable_pick_does_not_redraw_when_an_item_goes() -> None:
    context = JudgeContext(problem="How many?")
    items = [Item(unit(f"Step {i}."), context, True, False, None) for i in range(40)]
    picked = {i.thought.text for i in _stable_pick(items, 10)}
    assert len(picked) == 10
    dropped = next(i for i in items if i.thought.text not in picked)
    rest = [i for i in items if i is not dropped]
    assert {i.thought.text for i in _stable_pick(rest, 10)} == picked
    twice = _stable_pick(items + items, 40)
    assert len(twice) == 40  # duplicates of a text count once


def test_llm_table_has_one_rule_row_and_two_rows_per_model() -> None:
    def counts(tp: int, fp: int, calls: int) -> Counts:
        c = Counts(tp=tp, fp=fp, fn=10 - tp, tn=10 - fp, calls=calls, seconds=float(calls))
        c.checks = 20
        return c

    runs = [
        LlmRun(
            "small", {"rule": counts(2, 0, 0), "llm": counts(8, 6, 20), "hybrid": counts(5, 2, 6)}
        ),
        LlmRun(
            "big", {"rule": counts(2, 0, 0), "llm": counts(9, 1, 20), "hybrid": counts(6, 1, 6)}, 3
        ),
    ]
    rows = [r for r in llm_table(runs, 20).splitlines() if r.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| rule",
        "| llm, `small`",
        "| hybrid, `small`",
        "| llm, `big`",
        "| hybrid, `big`",
    ]
    assert "| llm, `big` | 20 | 90.0% | 90.0% | 20 | 1000 ms |" in rows
    assert "3 of the LLM answers came from the run's on-disk cache" in llm_table(runs, 20)


def test_llm_server_splits_model_and_url() -> None:
    assert llm_server("m=http://h:1") == ("m", "http://h:1")
    with pytest.raises(argparse.ArgumentTypeError):
        llm_server("http://h:1")
