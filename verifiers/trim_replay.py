"""Offline TrimR evaluation: replay recorded traces through the live trimming code path.

Each trace's thinking is streamed in small chunks through the same `ThoughtSegmenter`,
`ThoughtJudge` and `TrimController` a live branch uses. Judge verdicts are computed when a thought
closes and delivered to the controller after `verdict_delay_tokens` more streamed tokens, which
models an asynchronous verifier (0: verdicts land before the next chunk). When a rule fires, the
branch would be aborted at that point and continued with the intervention, so:

* thinking tokens at the trim point = tokens (`count_tokens`: word pieces of
  `verifiers.repetition` by default; `trim-replay` counts Qwen2.5 tokens) of the thinking up to
  where the rule fired, including the text streamed while verdicts were in flight;
* the answer at the trim point = the controller's answer (overthinking: the agreed answer;
  underthinking / repetition: the forced answer, proxied by the candidate with the most support
  so far - none, counted wrong, only when the branch had no candidate), in the judge's
  gradeable form;
* accuracy after: an untrimmed trace keeps its recorded label (`is_correct`); a trimmed one is
  correct when its answer is equivalent to the trace's own final answer and that was correct, or
  else when it is equivalent to the ground truth (math-verify, `EquivalenceChecker`).

The answer a trimmed branch would write after the intervention is not generated here; the
replay assumes it states the answer it had reached.

Each trace runs under its family's preset (`verifiers.trim_presets`: judge bar, cut
granularity, thresholds), picked from its `model` field unless `ReplayConfig.family` is given.
Nothing a live branch could not know steers a decision: the trace's final answer, label and
ground truth are read only to grade the outcome (and by the labelled `headroom` oracle bound).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from verifiers.answers import normalize_answer
from verifiers.judges import AnswerComparer, JudgeContext, ThoughtJudge, Verdict
from verifiers.repetition import count_word_pieces
from verifiers.segmentation import DEFAULT_FAMILY, SegmenterConfig, Thought, ThoughtSegmenter
from verifiers.traces import ThinkingSplit, Trace, load_traces
from verifiers.trim_presets import TrimPreset, preset_for
from verifiers.trimr import ConsistencyRequest, TrimController, TrimDecision, TrimRConfig, TrimRule

__all__ = [
    "Headroom",
    "ReplayConfig",
    "ReplayReport",
    "ReplaySummary",
    "ReplayTotals",
    "ReplayTrace",
    "RuleTotals",
    "TraceOutcome",
    "family_for_model",
    "format_totals",
    "headroom",
    "load_replay_traces",
    "replay",
    "replay_trace",
    "summarize",
]

# Substring of a trace's model name -> segmenter family (first match wins).
_MODEL_FAMILIES: tuple[tuple[str, str], ...] = (
    ("sky-t1", "sky_t1"),
    ("deepseek-r1", "deepseek_r1"),
    ("qwq", "qwq"),
    ("qwen3", "qwen3"),
    ("pangu", "openpangu"),
    ("limo", "limo"),
)


CountTokens = Callable[[str], int]
"""text -> thinking tokens it holds (`count_word_pieces`, or `TokenCounter.count` for real ones)."""


def family_for_model(model: str) -> str:
    lowered = model.lower()
    for needle, family in _MODEL_FAMILIES:
        if needle in lowered:
            return family
    return DEFAULT_FAMILY


class ReplayTrace(BaseModel):
    """What the replay needs of one recorded trace."""

    model_config = ConfigDict(frozen=True)

    id: str
    model: str = ""
    dataset: str = ""
    problem: str
    ground_truth: str
    thinking: str = Field(description="The thinking text only (markers removed).")
    final_answer: str | None = Field(default=None, description="The trace's own final answer.")
    is_correct: bool = Field(description="The source's correctness label for the final answer.")
    complete: bool = True
    family: str = DEFAULT_FAMILY
    token_budget: int | None = Field(default=None, description="The recording's max tokens.")

    @classmethod
    def from_record(cls, row: Mapping[str, Any]) -> ReplayTrace:
        """A raw trace row (``evals/data/traces`` format, native or stringified values)."""
        return cls.from_trace(Trace.model_validate(row))

    @classmethod
    def from_trace(cls, trace: Trace) -> ReplayTrace:
        """The replay's view of a trace: its thinking as the trace model splits it."""
        return cls(
            id=trace.id,
            model=trace.model,
            dataset=trace.dataset,
            problem=trace.problem,
            ground_truth=trace.ground_truth,
            thinking=trace.thinking_text,
            final_answer=trace.final_answer or None,
            is_correct=trace.is_correct,
            complete=trace.complete,
            family=family_for_model(trace.model),
            token_budget=trace.token_budget,
        )


def load_replay_traces(
    paths: Iterable[str | Path],
    *,
    datasets: Sequence[str] | None = None,
    complete_only: bool = True,
) -> list[ReplayTrace]:
    """Read trace files through the trace model, keeping the given datasets (all when None)
    and only traces with a thinking part (a fast answer has nothing to trim)."""
    loaded = load_traces(paths, datasets=datasets, complete_only=complete_only)
    return [ReplayTrace.from_trace(t) for t in loaded if t.split is not ThinkingSplit.NO_THINKING]


class ReplayConfig(BaseModel):
    """How traces are replayed."""

    model_config = ConfigDict(frozen=True)

    trimr: TrimRConfig | None = Field(
        default=None, description="Rule thresholds for every trace; None: each family's preset."
    )
    family: str | None = Field(
        default=None, description="Preset family for every trace; None: from the model name."
    )
    paragraphs: bool | None = Field(
        default=None, description="Judge every paragraph; None: as the family's preset says."
    )
    chunk_chars: int = Field(default=16, ge=1, description="Characters per streamed chunk.")
    verdict_delay_tokens: int = Field(
        default=0, ge=0, description="Streamed tokens between a thought closing and its verdicts."
    )
    token_budget: int | None = Field(
        default=None, description="Thinking budget for every trace; None: the recording's cap."
    )
    fallback_budget: int | None = Field(
        default=32768,
        description="Budget of a trace whose record names no cap (the MiP-Overthinking traces "
        "were generated with max_new_tokens=32768, stated in prose only).",
    )


class TraceOutcome(BaseModel):
    """One trace, replayed."""

    id: str
    model: str
    dataset: str = ""
    family: str = Field(default=DEFAULT_FAMILY, description="The preset the trace ran under.")
    rule: TrimRule | None = None
    reason: str = ""
    thoughts: int = Field(description="Thoughts closed before the trim point (or in total).")
    thinking_tokens: int = Field(description="Thinking tokens of the recorded trace.")
    tokens_at_trim: int = Field(description="Thinking tokens up to the trim point (or all).")
    chars_at_trim: int | None = Field(
        default=None, description="Characters of thinking streamed when the rule fired."
    )
    answer_at_trim: str | None = None
    final_answer: str | None = None
    ground_truth: str
    trim_matches_final: bool | None = Field(
        default=None, description="The trimmed answer is equivalent to the trace's own answer."
    )
    correct_before: bool
    correct_after: bool

    @property
    def tokens_saved(self) -> int:
        return self.thinking_tokens - self.tokens_at_trim


class RuleTotals(BaseModel):
    """What one rule's trims did over a set of traces."""

    trims: int = 0
    thinking_tokens_saved: int = 0
    lost: int = Field(default=0, description="Correct before, wrong after.")
    gained: int = Field(default=0, description="Wrong before, correct after.")


class ReplayTotals(BaseModel):
    """A set of replayed traces before and after trimming: a report's totals, and one row of
    the acceptance table (`trim-replay --json`)."""

    traces: int
    trimmed: int
    thinking_tokens_before: int
    thinking_tokens_after: int
    saved_pct: float
    accuracy_before: float = Field(description="Percent correct, recorded labels.")
    accuracy_after: float = Field(description="Percent correct after trimming.")
    accuracy_change_pt: float
    lost: int
    gained: int
    per_rule: dict[str, RuleTotals] = Field(description="By rule, every rule listed.")
    oracle_saved_pct: float | None = Field(
        default=None,
        description="Labelled bound: stop after the (M+1)-th thought naming the trace's own "
        "final answer, M and cut granularity of the row's preset (not a live number).",
    )


class ReplayReport(BaseModel):
    judge: str
    config: ReplayConfig
    traces: list[TraceOutcome]
    totals: ReplayTotals


def preset_for_trace(trace: ReplayTrace, config: ReplayConfig) -> TrimPreset:
    return preset_for(config.family or trace.family)


def segmenter_config(preset: TrimPreset, config: ReplayConfig) -> SegmenterConfig:
    paragraphs = preset.paragraphs if config.paragraphs is None else config.paragraphs
    return SegmenterConfig(family=preset.family, paragraphs=paragraphs)


class _Pending(BaseModel):
    """A verdict computed but not yet delivered (the verifier is still 'working')."""

    due_token: int
    thought: int | None = None
    request: ConsistencyRequest | None = None
    verdict: Verdict


async def _drive(
    trace: ReplayTrace, *, judge: ThoughtJudge, config: ReplayConfig
) -> tuple[TrimDecision | None, int]:
    """Stream one trace through segmenter + judge + controller; (decision, thoughts closed)."""
    preset = preset_for_trace(trace, config)
    segmenter = ThoughtSegmenter(segmenter_config(preset, config))
    controller = TrimController(
        config.trimr or preset.trimr,
        token_budget=config.token_budget or trace.token_budget or config.fallback_budget,
        name=trace.id,
    )
    context = JudgeContext(problem=trace.problem, family=preset.family)
    pending: list[_Pending] = []
    delay = config.verdict_delay_tokens

    async def on_thought(thought: Thought) -> None:
        if controller.observe_thought(thought) is not None:
            return
        verdict = await judge.reaches_answer(thought, context)
        pending.append(
            _Pending(due_token=controller.tokens + delay, thought=thought.index, verdict=verdict)
        )

    async def deliver() -> None:
        while controller.decision is None:
            due = [p for p in pending if p.due_token <= controller.tokens]
            if not due:
                return
            for item in due:
                pending.remove(item)
                if item.request is not None:
                    controller.on_consistency(item.request, item.verdict)
                elif item.thought is not None:
                    controller.on_answer(item.thought, item.verdict)
                if controller.decision is not None:
                    return
            for request in controller.take_consistency_requests():
                verdict = await judge.consistent(
                    request.first_answer, request.second_answer, context
                )
                pending.append(
                    _Pending(due_token=controller.tokens + delay, request=request, verdict=verdict)
                )

    text = trace.thinking
    for at in range(0, len(text), config.chunk_chars):
        chunk = text[at : at + config.chunk_chars]
        if controller.observe_text(chunk) is not None:
            break
        for thought in segmenter.feed(chunk):
            await on_thought(thought)
        await deliver()
        if controller.decision is not None:
            break
    if controller.decision is not None:
        return controller.decision, controller.thoughts_closed
    # The thought closed by the end of thinking cannot trim anything any more; count it only.
    return None, controller.thoughts_closed + len(segmenter.finish())


async def replay_trace(
    trace: ReplayTrace,
    *,
    judge: ThoughtJudge,
    checker: AnswerComparer,
    config: ReplayConfig | None = None,
    count_tokens: CountTokens = count_word_pieces,
) -> TraceOutcome:
    cfg = config or ReplayConfig()
    decision, thoughts = await _drive(trace, judge=judge, config=cfg)
    total = count_tokens(trace.thinking)
    outcome = TraceOutcome(
        id=trace.id,
        model=trace.model,
        dataset=trace.dataset,
        family=preset_for_trace(trace, cfg).family,
        thoughts=thoughts,
        thinking_tokens=total,
        tokens_at_trim=total,
        final_answer=trace.final_answer,
        ground_truth=trace.ground_truth,
        correct_before=trace.is_correct,
        correct_after=trace.is_correct,
    )
    if decision is None:
        return outcome
    answer = None if decision.answer is None else judge.gradeable_answer(decision.answer)
    matches_final: bool | None = None
    correct = False
    if answer is not None:
        if trace.final_answer is not None:
            matches_final = await checker.equivalent(trace.final_answer, answer)
        if matches_final:
            correct = trace.is_correct
        else:
            correct = await checker.equivalent(trace.ground_truth, answer)
    return outcome.model_copy(
        update={
            "rule": decision.rule,
            "reason": decision.reason,
            "tokens_at_trim": count_tokens(trace.thinking[: decision.at_char]),
            "chars_at_trim": decision.at_char,
            "answer_at_trim": answer,
            "trim_matches_final": matches_final,
            "correct_after": correct,
        }
    )


def _totals(outcomes: Sequence[TraceOutcome]) -> ReplayTotals:
    n = len(outcomes)
    before = sum(o.thinking_tokens for o in outcomes)
    after = sum(o.tokens_at_trim for o in outcomes)
    acc_before = sum(o.correct_before for o in outcomes) / n if n else 0.0
    acc_after = sum(o.correct_after for o in outcomes) / n if n else 0.0
    per_rule = {rule.value: RuleTotals() for rule in TrimRule}
    for o in outcomes:
        if o.rule is None:
            continue
        entry = per_rule[o.rule.value]
        entry.trims += 1
        entry.thinking_tokens_saved += o.tokens_saved
        entry.lost += o.correct_before and not o.correct_after
        entry.gained += o.correct_after and not o.correct_before
    return ReplayTotals(
        traces=n,
        trimmed=sum(o.rule is not None for o in outcomes),
        thinking_tokens_before=before,
        thinking_tokens_after=after,
        saved_pct=100.0 * (before - after) / before if before else 0.0,
        accuracy_before=100.0 * acc_before,
        accuracy_after=100.0 * acc_after,
        accuracy_change_pt=100.0 * (acc_after - acc_before),
        lost=sum(o.correct_before and not o.correct_after for o in outcomes),
        gained=sum(o.correct_after and not o.correct_before for o in outcomes),
        per_rule=per_rule,
    )


async def replay(
    traces: Sequence[ReplayTrace],
    *,
    judge: ThoughtJudge,
    checker: AnswerComparer,
    config: ReplayConfig | None = None,
    count_tokens: CountTokens = count_word_pieces,
) -> ReplayReport:
    """Replay every trace (sequentially: one branch at a time, deterministic)."""
    cfg = config or ReplayConfig()
    outcomes = [
        await replay_trace(
            trace, judge=judge, checker=checker, config=cfg, count_tokens=count_tokens
        )
        for trace in traces
    ]
    return ReplayReport(judge=judge.name, config=cfg, traces=outcomes, totals=_totals(outcomes))


def format_totals(report: ReplayReport) -> str:
    """A plain-text summary (the CLI renders richer tables)."""
    t = report.totals
    lines = [
        f"judge={report.judge} traces={t.traces} trimmed={t.trimmed}",
        f"thinking tokens {t.thinking_tokens_before} -> {t.thinking_tokens_after} "
        f"(saved {t.saved_pct:.1f}%)",
        f"accuracy {t.accuracy_before:.1f}% -> {t.accuracy_after:.1f}% "
        f"({t.accuracy_change_pt:+.1f} pt; lost {t.lost}, gained {t.gained})",
    ]
    lines += [
        f"  {rule:13s} trims={r.trims:4d} tokens_saved={r.thinking_tokens_saved:7d} "
        f"lost={r.lost} gained={r.gained}"
        for rule, r in t.per_rule.items()
    ]
    return "\n".join(lines)


class Headroom(BaseModel):
    """Oracle bound: trim each trace at the n-th thought that mentions its own final answer."""

    mentions: int
    tokens_before: int
    tokens_after: int
    saved_pct: float


def _squashed(text: str) -> str:
    return re.sub(r"\s+", "", normalize_answer(text))


def headroom(
    traces: Sequence[ReplayTrace],
    *,
    mentions: int,
    family: str | None = None,
    paragraphs: bool = False,
    count_tokens: CountTokens = count_word_pieces,
) -> Headroom:
    """Tokens saved if every trace stopped right after the `mentions`-th thought (paragraph,
    with `paragraphs`) whose text contains its own final answer (normalised substring match;
    generous for short answers such as "2"). With `mentions = overthink_m + 1` this bounds what
    the overthinking rule could save with a perfect judge. A labelled bound: it reads the
    trace's final answer, which no live decision may."""
    before = after = 0
    for trace in traces:
        total = count_tokens(trace.thinking)
        before += total
        cut = total
        answer = _squashed(trace.final_answer or "")
        if answer:
            seen = 0
            cfg = SegmenterConfig(family=family or trace.family, paragraphs=paragraphs)
            for thought in ThoughtSegmenter(cfg).feed(trace.thinking):
                if answer in _squashed(thought.text):
                    seen += 1
                    if seen == mentions:
                        cut = count_tokens(trace.thinking[: thought.end])
                        break
        after += cut
    saved = 100.0 * (before - after) / before if before else 0.0
    return Headroom(mentions=mentions, tokens_before=before, tokens_after=after, saved_pct=saved)


# -- the acceptance summary (`trim-replay --json`) ------------------------------------------


class ReplaySummary(BaseModel):
    judge: str
    pooled: ReplayTotals
    families: dict[str, ReplayTotals] = Field(description="By preset family.")
    groups: dict[str, ReplayTotals] = Field(description='By "model / dataset".')


def _row(outcomes: Sequence[TraceOutcome], oracle: float | None) -> ReplayTotals:
    t = _totals(outcomes)
    return t.model_copy(
        update={
            "saved_pct": round(t.saved_pct, 2),
            "accuracy_before": round(t.accuracy_before, 2),
            "accuracy_after": round(t.accuracy_after, 2),
            "accuracy_change_pt": round(t.accuracy_change_pt, 2),
            "oracle_saved_pct": None if oracle is None else round(oracle, 2),
        }
    )


def _oracle(
    traces: Sequence[ReplayTrace], config: ReplayConfig, count_tokens: CountTokens
) -> float:
    """The preset-matched oracle bound over traces of any mix of families."""
    before = after = 0
    for trace in traces:
        preset = preset_for_trace(trace, config)
        trimr = config.trimr or preset.trimr
        bound = headroom(
            [trace],
            mentions=trimr.overthink_m + 1,
            family=preset.family,
            paragraphs=segmenter_config(preset, config).paragraphs,
            count_tokens=count_tokens,
        )
        before += bound.tokens_before
        after += bound.tokens_after
    return 100.0 * (before - after) / before if before else 0.0


def summarize(
    report: ReplayReport,
    traces: Sequence[ReplayTrace],
    *,
    oracle: bool = True,
    count_tokens: CountTokens = count_word_pieces,
) -> ReplaySummary:
    """The acceptance fields, pooled, by preset family and by model / dataset."""
    by_id = {t.id: t for t in traces}
    config = report.config

    def row(outcomes: Sequence[TraceOutcome]) -> ReplayTotals:
        bound = _oracle([by_id[o.id] for o in outcomes], config, count_tokens) if oracle else None
        return _row(outcomes, bound)

    families: dict[str, list[TraceOutcome]] = {}
    groups: dict[str, list[TraceOutcome]] = {}
    for o in report.traces:
        families.setdefault(o.family, []).append(o)
        groups.setdefault(f"{o.model} / {o.dataset}", []).append(o)
    return ReplaySummary(
        judge=report.judge,
        pooled=row(report.traces),
        families={k: row(v) for k, v in sorted(families.items())},
        groups={k: row(v) for k, v in sorted(groups.items())},
    )
