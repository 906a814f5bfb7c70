"""Auto on real fast / slow pairs (issue 18): every dev pair, cross-validated, plus cascades.

For each ladder of recorded answers in ``../shared/traces`` (Qwen2.5-32B-Instruct's answers as
the fast mode of the Qwen2.5-32B base; QwQ-32B and R1-Distill-Qwen-32B as its thinkers) this runs
``tts-orchestrator router evaluate`` (``evals.routing.evaluate``, k-fold cross-validated by
problem) and writes one table with the acceptance verdict of each pair, computed here.

Run: ``.venv/bin/python -m benchmarks.router_pairs`` (``--no-write`` leaves the docs alone).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks.common import write_section
from evals.pairs import TOKENS_NOTE, load_ladder
from evals.routing import RoutingReport, evaluate

TRACES = Path("../shared/traces")
FAST = "qwen2.5-32b-instruct"
LADDERS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("gsm8k", ("qwq-32b",), True),
    ("gsm8k", ("r1-distill-qwen-32b",), True),
    ("math500", ("qwq-32b",), True),
    ("gsm8k", ("r1-distill-qwen-32b", "qwq-32b"), False),
    ("math500", ("r1-distill-qwen-32b", "qwq-32b"), False),
)


def _file(traces: Path, model: str, dataset: str) -> Path:
    return traces / f"mip_{model}_{dataset}.jsonl"


def command(traces: Path, dataset: str, thinkers: tuple[str, ...]) -> str:
    slow = " ".join(f"--slow {_file(traces, m, dataset)}" for m in thinkers)
    return f"tts-orchestrator router evaluate --fast {_file(traces, FAST, dataset)} {slow} --json"


def row(dataset: str, thinkers: tuple[str, ...], acceptance: bool, r: RoutingReport) -> str:
    a = r.acceptance
    verdict = ("**pass**" if a.passed else "**FAIL**") if acceptance else "(cascade, not a target)"
    return (
        f"| {dataset} | {' → '.join(('fast', *thinkers))} | {r.problems} "
        f"| {r.fast.accuracy:.1%} / {r.fast.mean_tokens:,.0f} "
        f"| {r.slow.accuracy:.1%} / {r.slow.mean_tokens:,.0f} "
        f"| {r.auto.accuracy:.1%} / {r.auto.mean_tokens:,.0f} ({r.auto.tokens_vs_slow:+.0%}) "
        f"| {r.oracle.accuracy:.1%} / {r.oracle.mean_tokens:,.0f} ({r.oracle.tokens_vs_slow:+.0%}) "
        f"| {a.share_of_oracle_saving:.0%} | {a.accuracy_vs_slow_pt:+.1f} | {verdict} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--traces", type=Path, default=TRACES)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    rows, commands, decisions = [], [], []
    for dataset, thinkers, target in LADDERS:
        ladder = load_ladder(
            _file(args.traces, FAST, dataset), [_file(args.traces, m, dataset) for m in thinkers]
        )
        report = evaluate(ladder, folds=args.folds, tokens_note=TOKENS_NOTE)
        rows.append(row(dataset, thinkers, target, report))
        commands.append(f"- `{command(args.traces, dataset, thinkers)}`")
        decisions.append(
            f"- {dataset} {' → '.join(('fast', *thinkers))}: stage 1 {report.decisions.stage1}; "
            f"stage 3 {report.decisions.stage3}"
        )
        print(rows[-1], flush=True)
    body = "\n".join(
        [
            "Auto as the service runs it (`policies.auto.AutoPolicy`): stage 1 from the problem "
            "text, stage 3 from signals of each answer (`policies.answer_signals`: boxed result, "
            "answer phrase, hedges, self-corrections, length vs the problem, result copied from "
            "the problem, ambiguity of the last line, agreement with cheaper answers). Decisions "
            "see only the problem and the answers; the records' `is_correct` grades and trains. "
            f"{args.folds}-fold cross-validated by problem (thresholds placed on inner folds, "
            f"accuracy kept within 0.5 pt of always-slow there). Oracle = cheapest level whose "
            f"answer is right: a bound that reads the labels. {TOKENS_NOTE}. Acceptance (issue "
            "18): auto saves ≥ 60% of the oracle's saving vs always-slow, at ≥ −1 pt, and beats "
            "always-fast.",
            "",
            "| problems | ladder | n | fast acc / tokens | slow acc / tokens | auto acc / tokens "
            "| oracle acc / tokens | share of oracle saving | auto vs slow (pt) | verdict |",
            "|---|---|---:|---|---|---|---|---:|---:|---|",
            *rows,
            "",
            "Per-stage decisions (cross-validated runs):",
            "",
            *decisions,
            "",
            "One ladder at a time:",
            "",
            *commands,
        ]
    )
    print(body)
    if not args.no_write:
        where = "" if args.traces == TRACES else f" --traces {args.traces}"
        write_section(
            "Auto on real fast / slow pairs (issue 18)",
            body,
            f".venv/bin/python -m benchmarks.router_pairs{where}",
        )


if __name__ == "__main__":
    main()
