"""DeepConf's offline replay on a hand-made bank: what prunes, what stops, what it costs."""

from __future__ import annotations

import json
from pathlib import Path

from evals.confidence_replay import BankSample, early_stop, evaluate, full_vote, load_bank
from verifiers.confidence import ConfidenceConfig, ConfidenceSource
from verifiers.voting import Aggregation

CONFIG = ConfidenceConfig(window=2, tail=2, warmup=2, keep=0.5, tau=0.95)


def _s(answer: str, correct: bool, conf: list[float]) -> BankSample:
    return BankSample(answer, correct, tuple(conf), ConfidenceSource.TOP_K)


# Two short sure branches disagree (threshold 5); a long unsure one is pruned at its first full
# window; the last (sure) finishes at step 6 and breaks the tie.
BANK = [
    _s("5", True, [5, 5]),
    _s("7", False, [5, 5, 5]),
    _s("7", False, [1] * 10),
    _s("5", True, [5] * 6),
]


async def test_the_unsure_branch_is_pruned_and_costs_only_what_it_generated() -> None:
    out = await early_stop(BANK, CONFIG, Aggregation.CONFIDENCE)
    # Branch 2 is pruned at step 3 (threshold set at step 3 when branch 1 finished).
    assert (out.pruned, out.stopped) == (1, False)
    assert out.tokens == 2 + 3 + 3 + 6
    assert out.correct


async def test_full_votes_spend_every_token() -> None:
    majority = await full_vote(BANK, CONFIG, Aggregation.MAJORITY)
    assert majority.tokens == 21
    assert majority.correct  # 2 vs 2: the tie goes to the first finisher ("5")


async def test_agreeing_warmup_stops_the_rest() -> None:
    bank = [_s("5", True, [5, 5]), _s("5", True, [5, 5, 5]), _s("7", False, [5] * 10)]
    out = await early_stop(bank, CONFIG, Aggregation.CONFIDENCE)
    assert out.stopped
    assert out.tokens == 2 + 3 + 3
    assert out.correct


async def test_the_bank_loads_from_an_eval_run(tmp_path: Path) -> None:
    path = tmp_path / "bank.jsonl"
    rows = [
        {
            "problem_id": "p",
            "sample_index": i,
            "gold": "5",
            "answer": s.answer,
            "correct": s.correct,
            "token_confidence": list(s.confidence),
            "confidence_source": "top_k",
        }
        for i, s in enumerate(BANK)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bank = load_bank(path)
    assert bank == {"p": BANK}
    rows_out = {r.name: r for r in await evaluate(bank, CONFIG)}
    assert rows_out["confidence early stop"].tokens == 14
    assert rows_out["majority@N"].tokens == 21
