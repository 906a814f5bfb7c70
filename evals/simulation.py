"""Replays recorded reasoning traces to estimate accuracy / latency / tokens of a TTS config.

Simulation model (an approximation; read before trusting a number):

* Inputs are trace files in the ``../shared/traces`` format: per problem one or more recorded
  generations with the source's own correctness label (``is_correct``) and extracted answer.
  Labels are trusted as recorded, including on traces cut off by the token cap (Sky-T1: 85 of
  its 300 correct MATH-500 rows); ``cut_off_counts_as_wrong`` makes those unanswered instead.
  A trace without an extracted answer never counts as correct.
* Tokens are estimated from characters (``chars_per_token``); no tokenizer is run.
* Each of the N branches replays one recorded trace of the problem, drawn without replacement
  while unused traces remain and with replacement after that. With one trace per problem
  (Sky-T1) all branches are identical, so N cannot change accuracy there: only latency and
  tokens move. Thought-anchors has two traces per problem (one right, one wrong).
* Branches decode in parallel at ``decode_tokens_per_s[pool]`` divided by
  ``1 + branch_slowdown * (N - 1)``; latency = ``prefill_s`` + time until the request ends.
* ``trim`` cuts a branch's thinking at the first place its final answer appears after ``=``,
  ``is``, ``answer``, ``boxed{`` or ``$`` (a text-match proxy for TrimR's "answer already reached"
  signal) and keeps the verdict; when the answer is not found the branch is not trimmed.
* ``thinking_budget`` (and ``mode=fast``, simulated as a budget of ``fast_thinking_budget``)
  truncates thinking; the branch keeps its verdict only if its answer had appeared before the
  cut, otherwise it has no answer. A forced answer costs ``forced_answer_tokens``. This ignores
  that a model may still guess right without thinking, so fast mode is pessimistic.
* ``aggregation=majority`` votes over answer clusters (all correct answers form one cluster; wrong
  ones are grouped by exact text); ties go to the cluster that finished first. ``first_finish``
  takes the first branch that finishes with an answer. ``weighted`` is not simulated (the traces
  carry no confidences).
* Early stop is checked each time a branch finishes with an answer; branches still running are
  cancelled and their remaining tokens are not generated. ``unanimous_window``: the last
  ``min(early_stop_window, N)`` answers agree. ``beta``: P(p_lead > p_second) under a
  Beta(lead + 1, second + 1) posterior exceeds ``early_stop_threshold`` (Adaptive-Consistency
  style; exact via the binomial identity for integer parameters).
"""

from __future__ import annotations

import enum
import json
import math
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evals.records import SampleRecord

__all__ = [
    "Aggregation",
    "EarlyStop",
    "RecordedTrace",
    "SimulationModel",
    "SimulationPoint",
    "ThinkingMode",
    "load_traces",
    "simulate",
]


class Aggregation(enum.StrEnum):
    """The service's `tts.aggregation` values that a replay can simulate (not `weighted`)."""

    MAJORITY = "majority"
    FIRST_FINISH = "first_finish"


class EarlyStop(enum.StrEnum):
    """The service's `tts.early_stop` values."""

    NONE = "none"
    UNANIMOUS_WINDOW = "unanimous_window"
    BETA = "beta"


class ThinkingMode(enum.StrEnum):
    SLOW = "slow"
    FAST = "fast"


class SimulationPoint(BaseModel):
    """The `tts` options a simulated request uses (the same names as the sweep grid keys)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_branches: int = Field(default=1, ge=1)
    aggregation: Aggregation = Aggregation.MAJORITY
    early_stop: EarlyStop = EarlyStop.NONE
    early_stop_window: int = Field(default=3, ge=1)
    early_stop_threshold: float = Field(default=0.95, gt=0.5, lt=1.0)
    trim: bool = False
    mode: ThinkingMode = ThinkingMode.SLOW
    thinking_budget: int | None = Field(default=None, ge=1)
    pool: str | None = Field(default=None, description="None: the `default` pool.")


class SimulationModel(BaseModel):
    """Assumed serving parameters; every number here is an input, not a measurement."""

    model_config = ConfigDict(frozen=True)

    chars_per_token: float = Field(default=4.0, gt=0, description="Characters per token.")
    decode_tokens_per_s: dict[str, float] = Field(
        default_factory=lambda: {"default": 25.0},
        description="Per-branch decode rate of each pool when it runs alone.",
    )
    prefill_s: float = Field(default=0.5, ge=0, description="Fixed time before the first token.")
    branch_slowdown: float = Field(
        default=0.0, ge=0, description="Fractional slowdown per extra concurrent branch."
    )
    fast_thinking_budget: int = Field(default=1024, ge=0, description="Budget for mode=fast.")
    forced_answer_tokens: int = Field(default=32, ge=0, description="Cost of a forced answer.")
    cut_off_counts_as_wrong: bool = Field(
        default=False,
        description="Treat traces that hit the token cap as unanswered instead of trusting the "
        "source's label (its harness still extracted an answer from the cut-off text).",
    )
    seed: int = Field(default=0, description="Seeds the trace draw per problem and sample.")


class RecordedTrace(BaseModel):
    """One recorded generation reduced to what the simulation needs."""

    model_config = ConfigDict(frozen=True)

    problem_key: str
    dataset: str
    model: str
    gold: str
    level: int | None
    subject: str | None
    correct: bool
    answer: str | None
    thinking_tokens: int
    answer_tokens: int
    first_answer_token: int | None = Field(
        description="Thinking tokens before the final answer first appears, if found."
    )


_CONCLUSION = re.compile(r"(=|\bis\b|answer|boxed\{|\$)\s*\S*\s*$")


def _first_answer_offset(thinking: str, answer: str) -> int | None:
    needle = answer.replace("\\\\", "\\").strip()
    if not needle:
        return None
    pattern = re.compile(r"(?<![\w.])" + re.escape(needle) + r"(?![\w]|\.\d)")
    for match in pattern.finditer(thinking):
        if _CONCLUSION.search(thinking[max(0, match.start() - 40) : match.start()]):
            return match.start()
    return None


def _level(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = re.findall(r"\d", value)
        return int(digits[0]) if digits else None
    return None


def _trace_from_row(row: dict[str, Any], *, model: SimulationModel) -> RecordedTrace:
    output: str = row["output"]
    end_marker = (row.get("thinking_delimiters") or [None, None])[1]
    end = output.find(end_marker) if end_marker and row.get("has_thinking_end") else -1
    thinking, answer_part = (output[:end], output[end:]) if end >= 0 else (output, "")
    answer = row.get("final_answer") or None
    if model.cut_off_counts_as_wrong and not row.get("complete", True):
        answer = None
    offset = _first_answer_offset(thinking, str(answer)) if answer else None
    chars_per_token = model.chars_per_token
    return RecordedTrace(
        problem_key=str(row["id"]).split(":", 1)[0],
        dataset=str(row.get("dataset", "")),
        model=str(row.get("model", "")),
        gold=str(row.get("ground_truth", "")),
        level=_level(row.get("level")),
        subject=row.get("subject"),
        correct=bool(row["is_correct"]) and answer is not None,
        answer=None if answer is None else str(answer),
        thinking_tokens=round(len(thinking) / chars_per_token),
        answer_tokens=round(len(answer_part) / chars_per_token),
        first_answer_token=None if offset is None else round(offset / chars_per_token),
    )


def load_traces(
    paths: Sequence[Path],
    *,
    datasets: Sequence[str] = (),
    model: SimulationModel | None = None,
) -> dict[str, list[RecordedTrace]]:
    """Traces grouped by problem, optionally keeping only some source datasets."""
    model = model or SimulationModel()
    grouped: dict[str, list[RecordedTrace]] = defaultdict(list)
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                trace = _trace_from_row(json.loads(line), model=model)
                if not datasets or trace.dataset in datasets:
                    grouped[trace.problem_key].append(trace)
    return dict(grouped)


class _Branch(BaseModel):
    thinking: int
    answer_tokens: int
    cluster: str | None
    answer: str | None
    correct: bool

    @property
    def tokens(self) -> int:
        return self.thinking + self.answer_tokens


def _branch(trace: RecordedTrace, point: SimulationPoint, model: SimulationModel) -> _Branch:
    thinking, answer_tokens = trace.thinking_tokens, trace.answer_tokens
    reached = trace.first_answer_token
    has_answer = trace.answer is not None
    if point.trim and reached is not None and reached < thinking:
        thinking, answer_tokens = reached, max(answer_tokens, model.forced_answer_tokens)
    budgets = [b for b in (point.thinking_budget,) if b is not None]
    if point.mode is ThinkingMode.FAST:
        budgets.append(model.fast_thinking_budget)
    budget = min(budgets) if budgets else None
    if budget is not None and thinking > budget:
        has_answer = has_answer and reached is not None and reached <= budget
        thinking, answer_tokens = budget, model.forced_answer_tokens
    correct = trace.correct and has_answer
    answer = trace.answer if has_answer else None
    if answer is None:
        cluster = None
    else:
        cluster = "correct" if correct else "".join(answer.split())
    return _Branch(
        thinking=thinking,
        answer_tokens=answer_tokens,
        cluster=cluster,
        answer=answer,
        correct=correct,
    )


def _draw(traces: Sequence[RecordedTrace], n: int, rng: np.random.Generator) -> list[int]:
    picks: list[int] = []
    while len(picks) < n:
        picks.extend(int(i) for i in rng.permutation(len(traces)))
    return picks[:n]


def _beta_confident(lead: int, second: int, threshold: float) -> bool:
    # X ~ Beta(lead + 1, second + 1); P(X > 1/2) = P(Binomial(lead + second + 1, 1/2) <= lead).
    trials = lead + second + 1
    tail = sum(math.comb(trials, i) for i in range(lead + 1)) / 2.0**trials
    return tail > threshold


def _should_stop(finished: Sequence[str], point: SimulationPoint, n_branches: int) -> bool:
    if point.early_stop is EarlyStop.UNANIMOUS_WINDOW:
        window = min(point.early_stop_window, n_branches)
        return len(finished) >= window and len(set(finished[-window:])) == 1
    if point.early_stop is EarlyStop.BETA:
        counts = [c for _, c in Counter(finished).most_common(2)] + [0]
        return _beta_confident(counts[0], counts[1], point.early_stop_threshold)
    return False


def _request(
    branches: Sequence[_Branch], point: SimulationPoint, model: SimulationModel
) -> tuple[_Branch | None, float, int, int]:
    """(winning branch, finish time in tokens, thinking tokens spent, answer tokens spent)."""
    order = sorted(range(len(branches)), key=lambda i: branches[i].tokens)
    stop_at = branches[order[-1]].tokens
    winner: _Branch | None = None
    if point.aggregation is Aggregation.FIRST_FINISH:
        for i in order:
            if branches[i].cluster is not None:
                winner, stop_at = branches[i], branches[i].tokens
                break
    else:
        finished: list[str] = []
        first_seen: dict[str, _Branch] = {}
        for i in order:
            cluster = branches[i].cluster
            if cluster is None:
                continue
            finished.append(cluster)
            first_seen.setdefault(cluster, branches[i])
            if _should_stop(finished, point, len(branches)):
                stop_at = branches[i].tokens
                break
        if finished:
            winner = first_seen[Counter(finished).most_common(1)[0][0]]
    thinking = sum(min(b.thinking, stop_at) for b in branches)
    answer = sum(min(b.answer_tokens, max(0, stop_at - b.thinking)) for b in branches)
    return winner, float(stop_at), thinking, answer


def simulate(
    traces: dict[str, list[RecordedTrace]],
    point: SimulationPoint,
    *,
    model: SimulationModel,
    n_samples: int = 1,
) -> list[SampleRecord]:
    """Simulated sample records for every problem (in key order) at one config point."""
    pool = point.pool or "default"
    try:
        rate = model.decode_tokens_per_s[pool]
    except KeyError:
        valid = ", ".join(sorted(model.decode_tokens_per_s))
        raise ValueError(f"unknown pool {pool!r}; simulated pools: {valid}") from None
    per_branch_rate = rate / (1.0 + model.branch_slowdown * (point.n_branches - 1))
    records: list[SampleRecord] = []
    for key in sorted(traces):
        problem_traces = traces[key]
        first = problem_traces[0]
        for sample in range(n_samples):
            rng = np.random.default_rng([model.seed, zlib.crc32(key.encode()), sample])
            picks = _draw(problem_traces, point.n_branches, rng)
            branches = [_branch(problem_traces[i], point, model) for i in picks]
            winner, stop_tokens, thinking, answer_tokens = _request(branches, point, model)
            records.append(
                SampleRecord(
                    problem_id=key,
                    sample_index=sample,
                    gold=first.gold,
                    level=first.level,
                    subject=first.subject,
                    answer=None if winner is None else winner.answer,
                    correct=winner is not None and winner.correct,
                    latency_s=model.prefill_s + stop_tokens / per_branch_rate,
                    ttft_s=model.prefill_s + 1.0 / per_branch_rate,
                    thinking_tokens=thinking,
                    answer_tokens=answer_tokens,
                    tokens_estimated=True,
                    model=first.model,
                    tts={"simulated": True, **point.model_dump(mode="json")},
                )
            )
    return records
