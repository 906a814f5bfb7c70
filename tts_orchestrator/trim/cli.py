"""`tts-orchestrator trim-replay`: TrimR rules over recorded traces, the live code path offline."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from verifiers.trimr import TrimRConfig, TrimRule, UnderthinkMode

DEFAULT_TRACES = sorted(
    (Path(__file__).resolve().parents[2] / "evals" / "data" / "traces").glob("*.jsonl")
)


def trim_replay(
    traces: Annotated[list[Path] | None, typer.Option(help="JSONL trace files.")] = None,
    datasets: Annotated[list[str] | None, typer.Option(help="Keep only these datasets.")] = None,
    include_incomplete: Annotated[bool, typer.Option(help="Also cut-off traces.")] = False,
    rules: Annotated[list[TrimRule] | None, typer.Option(help="Rules that may fire.")] = None,
    overthink_m: Annotated[int, typer.Option(help="Consecutive equivalent answers.")] = 2,
    weak_agreement: Annotated[
        bool, typer.Option(help="A weak candidate equal to the run's answer extends the run.")
    ] = False,
    underthink_max_thoughts: Annotated[int, typer.Option()] = 20,
    underthink_mode: Annotated[UnderthinkMode, typer.Option()] = UnderthinkMode.ANY,
    delay_tokens: Annotated[int, typer.Option(help="Verdict latency, in streamed tokens.")] = 0,
    per_trace: Annotated[bool, typer.Option(help="List every trimmed trace.")] = False,
    write_docs: Annotated[
        bool, typer.Option(help="Write the table to docs/benchmarks.md.")
    ] = False,
) -> None:
    """Replay the TrimR rules (rule judge) over recorded traces: tokens saved, accuracy change."""
    from verifiers.equivalence import EquivalenceChecker
    from verifiers.judges import RuleJudge
    from verifiers.trim_replay import (
        ReplayConfig,
        ReplayReport,
        headroom,
        load_replay_traces,
        replay,
    )

    config = TrimRConfig(
        overthink_m=overthink_m,
        weak_agreement=weak_agreement,
        underthink_max_thoughts=underthink_max_thoughts,
        underthink_mode=underthink_mode,
        **({"rules": frozenset(rules)} if rules else {}),
    )
    loaded = load_replay_traces(
        traces or DEFAULT_TRACES, datasets=datasets, complete_only=not include_incomplete
    )

    async def run() -> ReplayReport:
        async with EquivalenceChecker(timeout_s=5.0) as checker:
            return await replay(
                loaded,
                judge=RuleJudge(checker),
                checker=checker,
                config=ReplayConfig(trimr=config, verdict_delay_tokens=delay_tokens),
            )

    report = asyncio.run(run())
    console = Console()
    if per_trace:
        for o in report.traces:
            if o.rule is not None:
                console.print(
                    f"{o.id[:48]:48s} {o.rule.value:13s} {o.tokens_at_trim:6d}/"
                    f"{o.thinking_tokens:6d} {o.answer_at_trim!r} {o.reason}"
                )
    t = report.totals
    table = Table(title=f"TrimR replay over {t.traces} traces ({report.judge} judge)")
    for col in (
        "trimmed",
        "thinking tokens before",
        "after",
        "saved",
        "accuracy before",
        "after",
        "change (pt)",
        "lost",
        "gained",
    ):
        table.add_column(col)
    table.add_row(
        str(t.trimmed),
        str(t.tokens_before),
        str(t.tokens_after),
        f"{t.tokens_saved_pct:.1f}%",
        f"{t.accuracy_before:.1f}%",
        f"{t.accuracy_after:.1f}%",
        f"{t.accuracy_change_pt:+.1f}",
        str(t.lost),
        str(t.gained),
    )
    console.print(table)
    by_rule: dict[str, list[int]] = {}
    for o in report.traces:
        if o.rule is not None:
            by_rule.setdefault(o.rule.value, []).append(o.tokens_saved)
    for rule, saved in sorted(by_rule.items()):
        console.print(f"{rule}: {len(saved)} trims, {sum(saved)} tokens saved")
    # What a perfect judge could save: stop right after the n-th thought naming the final answer.
    bounds = [headroom(loaded, mentions=n) for n in (1, 2, 3)]
    for b in bounds:
        console.print(
            f"oracle bound, stop after the thought with mention {b.mentions} of the final answer "
            f"(overthink M = {b.mentions - 1}): {b.saved_pct:.1f}% saved"
        )
    if write_docs:
        from evals.docs import write_section

        rows = "\n".join(f"| {r} | {len(s)} | {sum(s)} |" for r, s in sorted(by_rule.items()))
        body = (
            f"Traces: {t.traces} ({', '.join(datasets or ['all datasets'])}; complete only: "
            f"{not include_incomplete}). Thinking tokens are word-piece counts.\n\n"
            "| trimmed | thinking tokens before | after | saved | accuracy before | after | "
            "change | lost | gained |\n|---|---|---|---|---|---|---|---|---|\n"
            f"| {t.trimmed} | {t.tokens_before} | {t.tokens_after} | {t.tokens_saved_pct:.1f}% | "
            f"{t.accuracy_before:.1f}% | {t.accuracy_after:.1f}% | "
            f"{t.accuracy_change_pt:+.1f} pt | "
            f"{t.lost} | {t.gained} |\n\n| rule | trims | tokens saved |\n|---|---|---|\n" + rows
        )
        body += (
            "\n\nOracle bound (`verifiers.trim_replay.headroom`): thinking tokens saved if every "
            "trace stopped right after the n-th thought whose text contains its own final answer "
            "(normalised substring match, generous for short answers) — what a perfect judge could "
            "save with the overthinking rule at M = n − 1, at no accuracy cost.\n\n"
            "| mentions (M + 1) | tokens saved |\n|---|---|\n"
            + "\n".join(
                f"| {b.mentions} (M = {b.mentions - 1}) | {b.saved_pct:.1f}% |" for b in bounds
            )
        )
        met = t.tokens_saved_pct >= 30.0 and abs(t.accuracy_change_pt) <= 1.0
        at_m = next((b for b in bounds if b.mentions == overthink_m + 1), None)
        body += (
            f"\n\nIssue-6 target (≥ 30% fewer thinking tokens at ≤ 1 pt accuracy change): "
            f"**{'met' if met else 'missed'}** ({t.tokens_saved_pct:.1f}%, "
            f"{t.accuracy_change_pt:+.1f} pt)"
            + (
                f"; a perfect judge at this M ({overthink_m}) would save at most "
                f"{at_m.saved_pct:.1f}% through the overthinking rule."
                if at_m is not None
                else "."
            )
        )
        args = " ".join(f"--datasets {d}" for d in datasets or [])
        rule_args = " ".join(f"--rules {r.value}" for r in rules or [])
        write_section(
            f"TrimR replay (issue 6){' — ' + ', '.join(r.value for r in rules) if rules else ''}",
            body,
            f"tts-orchestrator trim-replay {args} {rule_args} --write-docs".replace("  ", " "),
        )
