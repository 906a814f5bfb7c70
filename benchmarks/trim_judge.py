"""Precision and recall of the TrimR judge's two checks on labelled thoughts (issue 16).

Labelled thoughts come from the development traces: each trace is cut into the units its family's
preset judges (thoughts, or paragraphs), and a unit *concludes* when one of its last three
sentences contains the trace's own final answer (normalised, as a whole token). The labels are
for measurement only: the judge never sees the final answer.

* existence - does the judge say the unit reaches an answer (a candidate at its family's bar)?
  Gold: the unit concludes.
* equivalence - for consecutive candidates the controller would compare, does the judge call
  them the same answer? Gold, where it is known: both candidates normalise to the final answer
  (same), or exactly one does (different); pairs where neither does are left out.

Run: ``python -m benchmarks.trim_judge [--write-docs]`` (rule judge with the family presets).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.common import write_section
from tts_orchestrator.trim_cli import DEFAULT_TRACES
from verifiers.answers import normalize_answer
from verifiers.equivalence import EquivalenceChecker
from verifiers.intermediate import split_sentences
from verifiers.judges import JudgeContext, RuleJudge, ThoughtJudge
from verifiers.segmentation import SegmenterConfig, Thought, segment
from verifiers.trim_presets import judge_configs, preset_for
from verifiers.trim_replay import ReplayTrace, load_replay_traces

SECTION = "TrimR judge precision / recall (issue 16)"


def _key(text: str) -> str:
    return re.sub(r"\s+", "", normalize_answer(text)).lstrip("$")


def _squash(text: str) -> str:
    """Whitespace, thousands commas, dollar signs and TeX spacing out: "$25,000" -> "25000"."""
    text = re.sub(r"(?<=\d),(?=\d{3})|\$|\\[,;!]|\\text\{[^}]*\}|\\dfrac", "", text)
    return re.sub(r"\s+", "", text.replace("\\dfrac", "\\frac"))


def concludes(thought: Thought, final_answer: str) -> bool:
    """Gold label: the unit's last three sentences contain the final answer as a whole token."""
    tail = _squash(" ".join(split_sentences(thought.text)[-3:]))
    answer = _squash(final_answer).replace("\\dfrac", "\\frac")
    if not answer:
        return False
    return re.search(rf"(?<![\d.]){re.escape(answer)}(?![\d])", tail) is not None


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    seconds: float = 0.0
    checks: int = 0

    def add(self, predicted: bool, gold: bool) -> None:
        self.tp += predicted and gold
        self.fp += predicted and not gold
        self.fn += gold and not predicted
        self.tn += not predicted and not gold
        self.checks += 1

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


@dataclass
class FamilyCounts:
    existence: Counts = field(default_factory=Counts)
    equivalence: Counts = field(default_factory=Counts)


async def measure(traces: Sequence[ReplayTrace], judge: ThoughtJudge) -> dict[str, FamilyCounts]:
    out: dict[str, FamilyCounts] = {}
    for trace in traces:
        if not trace.final_answer:
            continue
        preset = preset_for(trace.family)
        counts = out.setdefault(preset.family, FamilyCounts())
        context = JudgeContext(problem=trace.problem, family=preset.family)
        units = segment(
            trace.thinking, SegmenterConfig(family=preset.family, paragraphs=preset.paragraphs)
        )
        previous: str | None = None
        for unit in units[:-1]:  # the last unit closes with the thinking: never judged live
            start = time.perf_counter()
            verdict = await judge.reaches_answer(unit, context)
            counts.existence.seconds += time.perf_counter() - start
            if verdict.confirms:
                continue  # "That checks out.": agrees with the last answer, states none
            stated = verdict.positive and verdict.answer is not None
            counts.existence.add(stated, concludes(unit, trace.final_answer))
            if not stated or verdict.answer is None:
                continue
            answer = judge.gradeable_answer(verdict.answer)
            if answer is None:
                continue
            if previous is not None:
                gold_first = _key(previous) == _key(trace.final_answer)
                gold_second = _key(answer) == _key(trace.final_answer)
                if gold_first or gold_second:
                    start = time.perf_counter()
                    same = await judge.consistent(previous, answer, context)
                    counts.equivalence.seconds += time.perf_counter() - start
                    counts.equivalence.add(same.positive, gold_first and gold_second)
            previous = answer
    return out


def table(results: dict[str, FamilyCounts], judge: str) -> str:
    lines = [
        "| judge | family | check | labelled items | positives (gold) | precision | recall | "
        "cost per check |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for family, counts in sorted(results.items()):
        for check, c in (("existence", counts.existence), ("equivalence", counts.equivalence)):
            cost = 1000 * c.seconds / c.checks if c.checks else 0.0
            lines.append(
                f"| {judge} | `{family}` | {check} | {c.checks} | {c.tp + c.fn} | "
                f"{100 * c.precision:.1f}% | {100 * c.recall:.1f}% | {cost:.2f} ms |"
            )
    return "\n".join(lines)


async def _run(write_docs: bool) -> None:
    traces = load_replay_traces(DEFAULT_TRACES, complete_only=True)
    tables = []
    async with EquivalenceChecker(timeout_s=5.0) as checker:
        for name, by_family in (("rule, presets", judge_configs()), ("rule, TARGET bar", {})):
            results = await measure(traces, RuleJudge(checker, by_family=by_family))
            tables.append(table(results, name))
    body = tables[0] + "\n" + "\n".join(tables[1].splitlines()[2:])
    print(body)
    if write_docs:
        note = (
            "Units are what each family's preset judges (thoughts, or paragraphs for QwQ and "
            "R1-distill); the last unit of a trace is left out (it closes with the thinking), and "
            'so are bare confirmations ("That checks out.": they agree with the previous '
            "answer without stating one). "
            "Gold labels read the trace's own final answer (measurement only). Equivalence "
            "pairs are consecutive candidates that cleared the bar, where the gold is known. "
            "`rule, presets` is the judge the presets run (the bar per family); `rule, TARGET "
            "bar` is the issue-6 default (a concluding sentence about the asked quantity "
            "counts). Cost is wall time on this CPU (math-verify in worker processes; cached "
            "pairs are free). The LLM judge (TrimR's prefill-only Yes/No verifier, "
            "`verifiers.judges.LlmJudge`) was not measured in this run.\n\n"
        )
        write_section(SECTION, note + body, "python -m benchmarks.trim_judge --write-docs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    asyncio.run(_run(args.write_docs))


if __name__ == "__main__":
    main()
