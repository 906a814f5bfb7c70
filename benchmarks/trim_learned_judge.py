"""Would a learned existence judge beat the rule bars? An offline estimate (issue 16).

Every unit a family's preset judges (thought or paragraph) that carries a candidate answer (the
shared extractor, last three sentences, any grade) becomes one labelled example:

* features a live branch knows: the candidate's grade and cue, whether it sits in the unit's
  last sentence, whether it is number-valued or written in an unknown the problem never uses,
  the marker that opens the next unit, how often the branch proposed the same value before
  (self-consistency), and how far into the thinking the unit ends;
* label (measurement only, never a feature): math-verify says the candidate equals the trace's
  own final answer.

A logistic regression per family (`policies.router.fit_logistic`, standardised features, L2 = 1)
is fitted on the train half of the problems (`trim-replay --split train`) and scored on both
halves. The stop rule is then simulated per trace with the preset's M: the branch stops after
M + 1 consecutive agreeing positives (a bare confirmation agrees with the previous one), at the
end of that unit, with that answer. Judges compared: the preset's rule judge (its own verdicts),
the learned judge at a probability bar, and either of the two.

This is an estimate, not the live code path: savings are characters of thinking (not tokens),
agreement is "same normalised value or both equal to the final answer" (a labelled proxy for
the judge's math-verify check), and underthinking is not simulated. `trim-replay` remains the
number of record; this command says whether a learned judge is worth wiring into it.

Run: ``python -m benchmarks.trim_learned_judge [--write-docs]`` (about 4 minutes: math-verify
labels every candidate).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from benchmarks.common import write_section
from benchmarks.trim_judge import _key
from policies.router import fit_logistic
from tts_orchestrator.trim.cli import DEFAULT_TRACES, Split
from verifiers.answer_text import answer_value, is_value, names_foreign_unknown, split_sentences
from verifiers.equivalence import EquivalenceChecker
from verifiers.intermediate import (
    AnswerStrength,
    IntermediateAnswer,
    IntermediateAnswerExtractor,
    QuestionTarget,
)
from verifiers.judges import AnswerComparer, JudgeContext, RuleJudge
from verifiers.segmentation import SegmenterConfig, segment
from verifiers.trim_presets import judge_configs, preset_for
from verifiers.trim_replay import ReplayTrace, load_replay_traces

SECTION = "TrimR learned existence judge, offline estimate (issue 16)"
FAMILIES = ("deepseek_r1", "qwq", "sky_t1")
BARS = (0.7, 0.8, 0.9, 0.95)
_CUES = (
    "boxed",
    "stated",
    "stated-before",
    "declared-right",
    "subject-is",
    "plain-equation",
    "is-the",
    "there-are",
    "verb-value",
    "equation",
    "last-number",
)
_NEXT_MARKERS = ("Wait", "Alternatively", "Hmm", "But", "Let me check", "Let me verify", "Okay, so")
_WIDTH = 4 + len(_CUES) + 4 + 1 + len(_NEXT_MARKERS) + 3 + 1
_HISTORY = range(_WIDTH - 4, _WIDTH - 1)  # seen before >= 1, 2, 3
_NO_HISTORY = [i for i in range(_WIDTH) if i not in _HISTORY]


@dataclass
class Unit:
    """One judged unit of a trace: its candidate's features, the rule verdict, the labels."""

    trace: str
    index: int
    end: int
    confirms: bool  # a bare confirmation (no candidate): agrees with the previous answer
    rule_positive: bool
    answer: str = ""
    strength: int = 0
    cue: str = ""
    last_sentence: bool = False
    foreign: bool = False
    next_marker: str | None = None
    seen_before: int = 0
    label: bool = False  # the candidate equals the trace's final answer (math-verify)
    right: bool = False  # the candidate equals the ground truth (math-verify)

    def features(self) -> list[float]:
        """The feature row (`_HISTORY` marks the self-consistency columns)."""
        row = [float(self.strength == s) for s in (1, 2, 3, 4)]
        row += [float(self.cue == c) for c in _CUES]
        row += [float(self.cue.startswith("pointer")), float(self.last_sentence)]
        row += [float(is_value(self.answer)), float(self.foreign)]
        row += [float(self.next_marker is None)]
        row += [float(self.next_marker == m) for m in _NEXT_MARKERS]
        row += [float(self.seen_before >= n) for n in (1, 2, 3)]
        row += [math.log1p(self.end) / 10.0]
        return row


_LAST_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?!.*\d)")


def last_number(text: str) -> IntermediateAnswer | None:
    """The last number of a unit's last sentence, ungraded: the looser candidate the extractor
    does not propose ("\\[ 500 + 440 = 940 \\]", "That's 12 apples.")."""
    sentences = split_sentences(text)
    found = _LAST_NUMBER.search(sentences[-1]) if sentences else None
    if found is None:
        return None
    return IntermediateAnswer(
        answer=found.group(0).rstrip(","),
        strength=AnswerStrength.NONE,
        cue="last-number",
        sentence=sentences[-1],
    )


async def trace_units(trace: ReplayTrace, judge: RuleJudge, checker: AnswerComparer) -> list[Unit]:
    """The judged units of one trace (the last one closes with the thinking: never judged)."""
    preset = preset_for(trace.family)
    context = JudgeContext(problem=trace.problem, family=preset.family)
    target = QuestionTarget.from_problem(trace.problem)
    wide = IntermediateAnswerExtractor()
    last = IntermediateAnswerExtractor(wide.config.model_copy(update={"window_sentences": 1}))
    config = SegmenterConfig(family=preset.family, paragraphs=preset.paragraphs)
    seen: dict[str, int] = {}
    out: list[Unit] = []
    for unit in segment(trace.thinking, config)[:-1]:
        verdict = await judge.reaches_answer(unit, context)
        found = wide.extract(unit.text, target=target) or last_number(unit.text)
        confirmation = Unit(
            trace=trace.id, index=unit.index, end=unit.end, confirms=True, rule_positive=True
        )
        if found is None or verdict.confirms:
            out += [confirmation] if verdict.confirms else []
            continue
        value = answer_value(found.answer)
        key = _key(value)
        closing = last.extract(unit.text, target=target)
        candidate = replace(
            confirmation,
            confirms=False,
            rule_positive=verdict.positive,
            answer=found.answer,
            strength=int(found.strength),
            cue=found.cue,
            last_sentence=closing is not None and closing.sentence == found.sentence,
            foreign=names_foreign_unknown(found.answer, trace.problem),
            next_marker=unit.next_marker,
            seen_before=seen.get(key, 0),
            label=await checker.equivalent(trace.final_answer or "", value),
            right=await checker.equivalent(trace.ground_truth, value),
        )
        out.append(candidate)
        seen[key] = seen.get(key, 0) + 1
    return out


@dataclass
class Outcome:
    saved_chars: int = 0
    total_chars: int = 0
    lost: int = 0
    gained: int = 0
    traces: int = 0

    def cells(self) -> str:
        saved = 100.0 * self.saved_chars / self.total_chars if self.total_chars else 0.0
        change = 100.0 * (self.gained - self.lost) / self.traces if self.traces else 0.0
        return f"{saved:.1f}% | {change:+.1f} | {self.lost} / {self.gained}"


def simulate(
    traces: Sequence[ReplayTrace],
    units: dict[str, list[Unit]],
    positive: Callable[[Unit], bool],
    *,
    m: int,
) -> Outcome:
    """Stop each trace after `m` + 1 consecutive agreeing positives; grade the stop's answer."""
    out = Outcome()
    for trace in traces:
        out.traces += 1
        out.total_chars += len(trace.thinking)
        run: list[Unit] = []
        stop: Unit | None = None
        end = 0
        for unit in units.get(trace.id, []):
            if unit.confirms:
                if run:
                    run.append(run[-1])
                    stop = run[-1] if len(run) > m else None
                    end = unit.end
            elif positive(unit) and not unit.foreign:
                agrees = bool(run) and (
                    _key(answer_value(run[-1].answer)) == _key(answer_value(unit.answer))
                    or (run[-1].label and unit.label)
                )
                run = [*run, unit] if agrees else [unit]
                stop, end = (unit if len(run) > m else None), unit.end
            if stop is not None:
                break
        if stop is None:
            continue
        out.saved_chars += len(trace.thinking) - end
        after = trace.is_correct if stop.label else stop.right
        out.lost += trace.is_correct and not after
        out.gained += after and not trace.is_correct
    return out


Probability = dict[int, float]
"""id(unit) -> the learned judge's P(the candidate is the trace's final answer)."""


def fit_probabilities(train: list[Unit], every: list[Unit], *, history: bool) -> Probability:
    """Fit on `train`, score `every`; without `history`, the self-consistency features are out."""
    keep = slice(None) if history else _NO_HISTORY

    def matrix(units: list[Unit]) -> np.ndarray:
        return np.array([u.features() for u in units])[:, keep]

    x = matrix(train)
    y = np.array([u.label for u in train], dtype=float)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    weights, bias = fit_logistic((x - mean) / scale, y, l2=1.0)
    z = ((matrix(every) - mean) / scale) @ weights + bias
    return {id(u): float(p) for u, p in zip(every, 1.0 / (1.0 + np.exp(-z)), strict=True)}


def _precision_recall(units: list[Unit], positive: Callable[[Unit], bool]) -> str:
    hits = [u for u in units if positive(u)]
    gold = sum(u.label for u in units)
    tp = sum(u.label for u in hits)
    precision = 100.0 * tp / len(hits) if hits else 0.0
    recall = 100.0 * tp / gold if gold else 0.0
    return f"{precision:.0f}% / {recall:.0f}%"


@dataclass(frozen=True)
class Candidate:
    """One judge of the comparison: which units it calls concluding, under which M."""

    name: str
    positive: Callable[[Unit], bool]
    m: int


def _above(p: Probability, bar: float) -> Callable[[Unit], bool]:
    return lambda u: p[id(u)] >= bar


def _either(p: Probability, bar: float) -> Callable[[Unit], bool]:
    return lambda u: u.rule_positive or p[id(u)] >= bar


def judges_of(family: str, p: Probability, p_plain: Probability) -> list[Candidate]:
    m = preset_for(family).trimr.overthink_m
    out = [Candidate("rule (preset)", lambda u: u.rule_positive, m)]
    for bar in BARS:
        out.append(Candidate(f"learned, p ≥ {bar}", _above(p, bar), m))
        out.append(Candidate(f"rule or learned p ≥ {bar}", _either(p, bar), m))
        out.append(Candidate(f"rule or learned p ≥ {bar}, no history", _either(p_plain, bar), m))
    # Failure mode (2) of the issue, measured: any number-valued result, several in a row.
    out.extend(
        Candidate("any number-valued candidate", lambda u: is_value(u.answer), loose_m)
        for loose_m in (2, 3)
    )
    # Labelled bounds (they read the final answer): a perfect judge over these candidates.
    out.append(Candidate("bound: extractor candidate = final answer", _extracted_label, 0))
    out.append(Candidate("bound: + a unit's last number", lambda u: u.label, 0))
    return out


def _extracted_label(unit: Unit) -> bool:
    return unit.label and unit.cue != "last-number"


def report(traces: Sequence[ReplayTrace], units: dict[str, list[Unit]]) -> str:
    lines = [
        "| family | judge | M | train: saved (chars) | Δ pt | lost / gained | held-out: "
        "saved (chars) | Δ pt | lost / gained | held-out precision / recall (candidates) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for family in FAMILIES:
        mine = [t for t in traces if preset_for(t.family).family == family]
        halves = {s: [t for t in mine if s.keeps(t.problem)] for s in (Split.TRAIN, Split.HELDOUT)}
        candidates = {
            s: [u for t in ts for u in units[t.id] if not u.confirms] for s, ts in halves.items()
        }
        train, held = candidates[Split.TRAIN], candidates[Split.HELDOUT]
        p = fit_probabilities(train, train + held, history=True)
        p_plain = fit_probabilities(train, train + held, history=False)
        for judge in judges_of(family, p, p_plain):
            cells = [simulate(halves[s], units, judge.positive, m=judge.m).cells() for s in halves]
            pr = _precision_recall(held, judge.positive)
            lines.append(
                f"| `{family}` | {judge.name} | {judge.m} | {cells[0]} | {cells[1]} | {pr} |"
            )
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> None:
    traces = [t for t in load_replay_traces(DEFAULT_TRACES, complete_only=True) if t.final_answer]
    units: dict[str, list[Unit]] = {}
    async with EquivalenceChecker(timeout_s=5.0) as checker:
        judge = RuleJudge(checker, by_family=judge_configs())
        for trace in traces:
            units[trace.id] = await trace_units(trace, judge, checker)
    body = report(traces, units)
    print(body)
    if args.write_docs:
        note = (
            "Offline estimate (see the module docstring of `benchmarks/trim_learned_judge.py`): "
            "savings in characters of thinking, agreement by a labelled proxy, no underthinking; "
            "`trim-replay` (the preset rows there) is the number of record, and this estimate "
            "tracks it within about 1.5 points per family. The learned judge is a logistic "
            "regression per family fitted on the train half only; its bars are listed, not "
            "chosen. `no history` drops the features that count how often the branch proposed "
            "the value before. `any number-valued candidate` is the looser candidate rule with "
            "M = 2 or 3 agreeing units (failure mode 2 of the issue: intermediate values do "
            "repeat). The `bound` rows read the trace's final answer (labelled bounds, not live "
            "numbers): a perfect existence judge over the extractor's candidates, then also over "
            "each unit's last number. Precision / recall are over held-out units that carry a "
            "candidate (a unit's last number counts as a candidate; label: the candidate equals "
            "the trace's own final answer).\n\n"
        )
        write_section(SECTION, note + body, "python -m benchmarks.trim_learned_judge --write-docs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true")
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
