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

Run: ``python -m benchmarks.trim_judge [--write-docs]`` (rule judge with the family presets);
``--llm MODEL=URL`` (repeatable) adds an LLM judge served by llama.cpp / vLLM on the labelled
sample, ``--llm-cache FILE`` keeps its answers for the next run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import write_section
from tts_orchestrator.trim.cli import DEFAULT_TRACES
from verifiers.answer_text import split_sentences
from verifiers.answers import normalize_answer
from verifiers.equivalence import EquivalenceChecker
from verifiers.intermediate import (
    AnswerStrength,
    IntermediateAnswerExtractor,
    QuestionTarget,
)
from verifiers.judges import JudgeContext, LlmJudge, RuleJudge, ScoreFn, ThoughtJudge
from verifiers.segmentation import SegmenterConfig, Thought, segment
from verifiers.trim_presets import judge_configs, preset_for
from verifiers.trim_replay import ReplayTrace, load_replay_traces

SECTION = "TrimR judge precision / recall (issue 16)"


def _key(text: str) -> str:
    return re.sub(r"\s+", "", normalize_answer(text)).lstrip("$")


def _squash(text: str) -> str:
    """Whitespace, thousands commas, dollar signs and TeX spacing out: "$25,000" -> "25000"."""
    text = re.sub(r"\\text\{([^}]*)\}", r"\1", text)
    text = re.sub(r"(?<=\d),(?=\d{3})|\$|\\[,;!]", "", text)
    return re.sub(r"\s+", "", text.replace("\\dfrac", "\\frac"))


def concludes(thought: Thought, final_answer: str) -> bool:
    """Gold label: the unit's last three sentences contain the final answer as a whole token."""
    tail = _squash(" ".join(split_sentences(thought.text)[-3:]))
    answer = _squash(final_answer)
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
    calls: int = 0  # LLM calls among the checks

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


@dataclass
class Item:
    """One labelled unit of the LLM sample, with the rule judge's verdict on it."""

    thought: Thought
    context: JudgeContext
    gold: bool
    rule_positive: bool
    rule_strength: AnswerStrength | None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _stable_pick(items: Sequence[Item], k: int) -> list[Item]:
    """The `k` distinct units whose text hashes lowest: a fixed pseudo-random draw that a change
    elsewhere in the traces (or in the rule judge) does not reshuffle."""
    unique = {_digest(item.thought.text): item for item in items}
    return [unique[d] for d in sorted(unique)[:k]]


async def sample_units(traces: Sequence[ReplayTrace], rule: RuleJudge, *, size: int) -> list[Item]:
    """`size` labelled units, half concluding and half not, drawn over every family."""
    positives: list[Item] = []
    negatives: list[Item] = []
    for trace in traces:
        if not trace.final_answer:
            continue
        preset = preset_for(trace.family)
        context = JudgeContext(problem=trace.problem, family=preset.family)
        config = SegmenterConfig(family=preset.family, paragraphs=preset.paragraphs)
        extractor = IntermediateAnswerExtractor(rule.config_for(preset.family).extractor)
        target = QuestionTarget.from_problem(trace.problem)
        for unit in segment(trace.thinking, config)[:-1]:
            found = extractor.extract(unit.text, target=target)
            verdict = await rule.reaches_answer(unit, context)
            if verdict.confirms:
                continue
            item = Item(
                thought=unit,
                context=context,
                gold=concludes(unit, trace.final_answer),
                rule_positive=verdict.positive,
                rule_strength=found.strength if found is not None else None,
            )
            (positives if item.gold else negatives).append(item)
    return _stable_pick(positives, size // 2) + _stable_pick(negatives, size - size // 2)


class CachedScore:
    """A judge's score function with its answers kept on disk (JSONL, keyed by model and
    prompt): a rerun asks the LLM only for prompts it has not seen. A cached answer brings the
    wall time its call took when it was made, so the cost column stays a measured cost."""

    def __init__(self, score: ScoreFn, path: Path, model: str) -> None:
        self._score = score
        self._path = path
        self._model = model
        self._known: dict[str, tuple[dict[str, float], float]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self._known[row["key"]] = (row["top"], row["seconds"])
        self.hits = 0
        self.recorded_s = 0.0  # wall time the cached answers took when they were made

    async def __call__(self, prompt: str) -> Mapping[str, float]:
        key = _digest(self._model + "\n" + prompt)
        if key in self._known:
            top, seconds = self._known[key]
            self.hits += 1
            self.recorded_s += seconds
            return top
        start = time.perf_counter()
        top = dict(await self._score(prompt))
        seconds = time.perf_counter() - start
        self._known[key] = (top, seconds)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a") as f:
            f.write(json.dumps({"key": key, "top": top, "seconds": seconds}) + "\n")
        return top


def http_score(client: httpx.AsyncClient, url: str) -> ScoreFn:
    """Prefill-only Yes/No: one generated token's top log-probabilities (llama.cpp / vLLM)."""

    async def score(prompt: str) -> Mapping[str, float]:
        body = {"prompt": prompt, "max_tokens": 1, "logprobs": 10, "temperature": 0.0}
        response = await client.post(f"{url}/v1/completions", json=body)
        response.raise_for_status()
        logprobs = response.json()["choices"][0]["logprobs"]
        if "content" in logprobs:  # llama.cpp
            top = logprobs["content"][0]["top_logprobs"]
            return {t["token"]: float(t["logprob"]) for t in top}
        return {k: float(v) for k, v in logprobs["top_logprobs"][0].items()}  # OpenAI legacy

    return score


async def measure_llm(
    items: Sequence[Item], judge: LlmJudge, cache: CachedScore | None = None
) -> dict[str, Counts]:
    """Existence on the sample: the rule judge, the LLM judge, and the hybrid (the rule decides
    a stated / boxed answer and a unit with no candidate; the LLM decides the rest)."""
    out = {name: Counts() for name in ("rule", "llm", "hybrid")}
    for item in items:
        out["rule"].add(item.rule_positive, item.gold)
        recorded = cache.recorded_s if cache is not None else 0.0
        start = time.perf_counter()
        verdict = await judge.reaches_answer(item.thought, item.context)
        elapsed = time.perf_counter() - start
        if cache is not None:  # an answer from the cache costs what its call cost then
            elapsed += cache.recorded_s - recorded
        out["llm"].add(verdict.positive, item.gold)
        out["llm"].seconds += elapsed
        out["llm"].calls += 1
        sure = item.rule_strength is None or item.rule_strength >= AnswerStrength.STATED
        out["hybrid"].add(item.rule_positive if sure else verdict.positive, item.gold)
        if not sure:
            out["hybrid"].seconds += elapsed
            out["hybrid"].calls += 1
    return out


@dataclass
class LlmRun:
    """One LLM judge measured on the sample: its model, the three rows, cache hits."""

    model: str
    results: dict[str, Counts]
    cached: int = 0


def llm_table(runs: Sequence[LlmRun], size: int) -> str:
    cached = sum(r.cached for r in runs)
    reused = (
        f" {cached} of the LLM answers came from the run's on-disk cache (`--llm-cache`, "
        "keyed by model and prompt); each counts the wall time its call took when it was made."
        if cached
        else ""
    )
    models = ", ".join(f"`{r.model}`" for r in runs)
    lines = [
        f"Existence on a balanced sample of {size} labelled units (half concluding, the units "
        "whose text hashes lowest, so a change elsewhere does not redraw the sample), all "
        f"families; LLM judges: {models} on llama.cpp (xllamacpp), one at a time, 2 CPU "
        "threads, raw completion prompt `verifiers/prompts/reaches_answer.txt`, one token, Yes "
        "vs No log-probabilities, the few-shot prefix served from the prompt cache." + reused,
        "",
        "| judge | checks | precision | recall | LLM calls | cost per check |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [("rule", runs[0].results["rule"])] + [
        (f"{name}, `{r.model}`", r.results[name]) for r in runs for name in ("llm", "hybrid")
    ]
    for name, c in rows:
        per = 1000 * c.seconds / c.checks if c.checks else 0.0
        lines.append(
            f"| {name} | {c.checks} | {100 * c.precision:.1f}% | {100 * c.recall:.1f}% | "
            f"{c.calls} | {per:.0f} ms |"
        )
    return "\n".join(lines)


def llm_server(spec: str) -> tuple[str, str]:
    """`MODEL=URL` of `--llm`, split."""
    model, sep, url = spec.partition("=")
    if not sep or not model or not url:
        raise argparse.ArgumentTypeError(f"expected MODEL=URL, got {spec!r}")
    return model, url


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


async def _run(args: argparse.Namespace) -> None:
    traces = load_replay_traces(DEFAULT_TRACES, complete_only=True)
    tables = []
    async with EquivalenceChecker(timeout_s=5.0) as checker:
        presets = RuleJudge(checker, by_family=judge_configs())
        for name, by_family in (("rule, presets", judge_configs()), ("rule, TARGET bar", {})):
            results = await measure(traces, RuleJudge(checker, by_family=by_family))
            tables.append(table(results, name))
        items = await sample_units(traces, presets, size=args.llm_sample) if args.llm else []
    body = tables[0] + "\n" + "\n".join(tables[1].splitlines()[2:])
    llm_note = (
        "The LLM judge (TrimR's prefill-only Yes/No verifier, `verifiers.judges.LlmJudge`) was "
        "not measured in this run."
    )
    if args.llm:
        runs = []
        async with httpx.AsyncClient(timeout=300.0) as client:
            for model, url in args.llm:
                score: ScoreFn = http_score(client, url)
                cache = None
                if args.llm_cache is not None:
                    score = cache = CachedScore(score, args.llm_cache, model)
                rows = await measure_llm(items, LlmJudge(score), cache)
                runs.append(LlmRun(model, rows, cache.hits if cache else 0))
        llm_note = llm_table(runs, len(items))
    print(body + "\n\n" + llm_note)
    if args.write_docs:
        note = (
            "Units are what each family's preset judges (thoughts, or paragraphs for QwQ and "
            "R1-distill); the last unit of a trace is left out (it closes with the thinking), and "
            'so are bare confirmations ("That checks out.": they agree with the previous '
            "answer without stating one). Gold labels read the trace's own final answer "
            "(measurement only). Equivalence pairs are consecutive candidates that cleared the "
            "bar, where the gold is known. `rule, presets` is the judge the presets run (the bar "
            "per family); `rule, TARGET bar` is the issue-6 default (a concluding sentence about "
            "the asked quantity counts). Cost is wall time on this CPU (math-verify in worker "
            "processes; cached pairs are free).\n\n"
        )
        command = "python -m benchmarks.trim_judge --write-docs"
        for model, _ in args.llm:
            command += f" --llm {model}=URL"
        if args.llm:
            command += f" --llm-sample {args.llm_sample}"
        write_section(SECTION, note + body + "\n\n" + llm_note, command)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--llm",
        type=llm_server,
        action="append",
        default=[],
        metavar="MODEL=URL",
        help="an LLM judge: the model's name and its OpenAI-compatible server (repeatable)",
    )
    parser.add_argument("--llm-sample", type=int, default=300)
    parser.add_argument(
        "--llm-cache",
        type=Path,
        default=None,
        help="JSONL of the LLM's answers by model and prompt: a rerun asks only for new prompts",
    )
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
