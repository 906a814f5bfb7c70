"""DeepConf's offline replay on a hand-made bank, through the service's presenter: what prunes,
what stops, what it costs, and that grades steer nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from evals.confidence_replay import (
    BankSample,
    Method,
    Outcome,
    deepconf_methods,
    evaluate,
    load_bank,
    replay,
)
from tts_orchestrator.actors.jobs import BranchChunk
from tts_orchestrator.backends.base import CompletionChunk
from tts_orchestrator.protocol import TtsOptions
from tts_orchestrator.request.branches import VotingPresenter
from tts_orchestrator.request.confidence import BranchConfidence
from verifiers.confidence import ConfidenceConfig, ConfidenceSource
from verifiers.families import get_family

CONFIG = ConfidenceConfig(
    window=2, tail=2, warmup=2, keep=0.5, prune_keep=0.5, tau=0.95, warmup_first=False
)
GENERIC = get_family("generic")
EARLY_STOP = Method(
    "es", TtsOptions(aggregation="confidence", early_stop="confidence"), confidence=CONFIG
)
MAJORITY = Method("maj", TtsOptions())


async def _same(a: str, b: str) -> bool:
    return a == b


def _s(answer: str, correct: bool, conf: list[float]) -> BankSample:
    return BankSample(
        f"So the answer is \\boxed{{{answer}}}.", correct, tuple(conf), ConfidenceSource.TOP_K
    )


async def _replay(bank: list[BankSample], method: Method, slots: int | None = None) -> Outcome:
    return await replay(bank, method, equivalent=_same, family=GENERIC, slots=slots)


# Two short sure branches disagree (threshold 5); a long unsure one is pruned at its first full
# window; the last (sure) finishes at step 6 and breaks the tie.
BANK = [
    _s("5", True, [5, 5]),
    _s("7", False, [5, 5, 5]),
    _s("7", False, [1] * 10),
    _s("5", True, [5] * 6),
]
# The first two agree: the request stops before the third ends.
AGREE = [_s("5", True, [5, 5]), _s("5", True, [5, 5, 5]), _s("7", False, [5] * 10)]


async def test_the_unsure_branch_is_pruned_and_costs_only_what_it_generated() -> None:
    out = await _replay(BANK, EARLY_STOP)
    # Branch 2 is pruned at its third token (the threshold was set when branch 1 finished).
    assert (out.pruned, out.stopped) == (1, False)
    assert out.tokens == 2 + 3 + 3 + 6
    assert out.correct


async def test_full_majority_spends_every_token() -> None:
    out = await _replay(BANK, MAJORITY)
    assert out.tokens == 21
    assert out.correct  # 2 vs 2: the tie goes to the first finisher ("5")


async def test_agreeing_warmup_stops_the_rest() -> None:
    out = await _replay(AGREE, EARLY_STOP)
    assert out.stopped
    assert out.tokens == 2 + 3 + 2  # branch 2 is aborted when branch 1 ends, mid-step
    assert out.correct


async def test_a_branch_queued_for_a_slot_costs_nothing_once_the_request_stops() -> None:
    out = await _replay(AGREE, EARLY_STOP, slots=2)
    assert out.stopped
    assert out.tokens == 2 + 3


ONLINE_ORDER = dataclasses.replace(
    EARLY_STOP, confidence=CONFIG.model_copy(update={"warmup_first": True})
)


async def test_warmup_first_starts_the_rest_once_the_threshold_exists() -> None:
    out = await _replay(BANK, ONLINE_ORDER)
    # Branches 2 and 3 start after the warm-up (0 and 1) ended: branch 2 is pruned at its
    # first full window (2 tokens, not 3 as when it ran alongside the warm-up).
    assert (out.pruned, out.stopped) == (1, False)
    assert out.tokens == 2 + 3 + 2 + 6
    assert out.correct
    # The price is latency: 3 decode steps of warm-up, then 6 for branch 3 (6 all at once).
    assert (out.steps, (await _replay(BANK, EARLY_STOP)).steps) == (3 + 6, 6)


async def test_warmup_first_starts_nothing_once_the_warmup_agrees() -> None:
    out = await _replay(AGREE, ONLINE_ORDER)
    assert out.stopped
    assert out.tokens == 2 + 3  # branch 2 never started, even with a slot for it


# The warm-up's lowest groups are 5 and 3; the later branch runs at 4.2, the last at 5.
SPREAD = [
    _s("5", True, [5, 5]),
    _s("7", False, [3, 3, 3]),
    _s("7", False, [4.2] * 8),
    _s("5", True, [5] * 10),
]


@pytest.mark.parametrize(
    ("prune_keep", "pruned"),
    [
        pytest.param(0.1, 1, id="90th-percentile-4.8-prunes-4.2"),
        pytest.param(0.5, 0, id="median-4.0-keeps-4.2"),
    ],
)
async def test_prune_keep_sets_the_replayed_threshold_whatever_keep(
    prune_keep: float, pruned: int
) -> None:
    for keep in (0.1, 1.0):  # the vote's share never moves the threshold
        config = CONFIG.model_copy(update={"prune_keep": prune_keep, "keep": keep})
        out = await _replay(SPREAD, dataclasses.replace(EARLY_STOP, confidence=config))
        assert out.pruned == pruned, keep
        assert out.tokens == 2 + 3 + (3 if pruned else 8) + 10


def _presenter(config: ConfidenceConfig, n: int) -> VotingPresenter:
    confidence = BranchConfidence(config, n, prune=True)
    tts = TtsOptions(n_branches=n, aggregation="confidence", early_stop="confidence")
    return VotingPresenter(
        [None] * n, family=GENERIC, tts=tts, equivalent=_same, confidence=confidence
    )


async def _finish(presenter: VotingPresenter, branch: int, sample: BankSample) -> None:
    chunk = CompletionChunk(
        text=sample.text, n_tokens=1, token_confidence=sample.confidence, finish_reason="stop"
    )
    await presenter.observe(BranchChunk(branch=branch, chunk=chunk))


async def test_the_presenter_releases_waiting_branches_only_after_the_warmup() -> None:
    online = CONFIG.model_copy(update={"warmup_first": True})
    p = _presenter(online, 4)
    assert p.waiting == [2, 3]
    await _finish(p, 0, BANK[0])
    assert p.take_starts() == []  # one warm-up branch still runs: no threshold yet
    await _finish(p, 1, BANK[1])
    assert p.take_starts() == [2, 3]
    assert (p.waiting, p.take_starts()) == ([], [])
    # A warm-up whose answers agree stops the request: the waiting branch never starts.
    agreed = _presenter(online, 3)
    await _finish(agreed, 0, AGREE[0])
    await _finish(agreed, 1, AGREE[1])
    assert agreed.take_starts() == []
    assert agreed.branches[2].aborted


async def test_grades_steer_nothing() -> None:
    flipped = [dataclasses.replace(s, correct=not s.correct) for s in BANK]
    a, b = await _replay(BANK, EARLY_STOP), await _replay(flipped, EARLY_STOP)
    assert (a.tokens, a.pruned, a.stopped) == (b.tokens, b.pruned, b.stopped)
    assert a.correct != b.correct


@pytest.mark.parametrize("source", list(ConfidenceSource), ids=str)
async def test_the_bank_loads_from_an_eval_run(tmp_path: Path, source: ConfidenceSource) -> None:
    path = tmp_path / "bank.jsonl"
    bank = [dataclasses.replace(s, source=source) for s in BANK]
    rows = [
        {
            "problem_id": "p",
            "sample_index": i,
            "gold": "5",
            "answer": None,
            "content": s.text,
            "correct": s.correct,
            "token_confidence": list(s.confidence),
            "confidence_source": source.value,
            "finish_reason": "stop",
        }
        for i, s in enumerate(bank)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = load_bank(path)
    assert loaded == {"p": bank}
    rows_out = {
        r.name: r for r in await evaluate(loaded, deepconf_methods(CONFIG, n=4), equivalent=_same)
    }
    # A sampled-logprob bank is fed as logprobs: exp() weights, the same pruning order here.
    assert rows_out["confidence early stop"].tokens == 14
    assert rows_out["confidence early stop"].pruned == 1
    assert rows_out["majority@N"].tokens == 21
