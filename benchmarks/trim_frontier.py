"""TrimR replay over a grid of rule settings: tokens saved vs accuracy change (issue 6).

The same replay as ``tts-orchestrator trim-replay`` (rule judge, the live code path), once per
setting of the overthinking streak M, the underthinking thought limit N and weak agreement, over
the complete MATH-500 / MATH traces. It answers whether *any* setting of the rules reaches the
issue's target (≥ 30% fewer thinking tokens at ≤ 1 pt accuracy change), not only the default.

Run: ``.venv/bin/python -m benchmarks.trim_frontier``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from benchmarks.common import write_section
from tts_orchestrator.trim.cli import DEFAULT_TRACES
from verifiers.equivalence import EquivalenceChecker
from verifiers.judges import RuleJudge
from verifiers.traces import QWEN25_TOKENIZER, TokenCounter
from verifiers.trim_replay import ReplayConfig, ReplayTotals, load_replay_traces, replay
from verifiers.trimr import TrimRConfig, TrimRule

DATASETS = ["math500", "math_hendrycks"]


Row = tuple[int, int | None, bool, ReplayTotals]


async def sweep(ms: list[int], ns: list[int | None], weak: list[bool]) -> list[Row]:
    traces = load_replay_traces(DEFAULT_TRACES, datasets=DATASETS, complete_only=True)
    counter = TokenCounter.qwen25()
    counter.count_many([t.thinking for t in traces])
    rows = []
    async with EquivalenceChecker(timeout_s=5.0) as checker:
        for m, n, w in itertools.product(ms, ns, weak):
            if n is None:  # underthinking off
                config = TrimRConfig(
                    overthink_m=m,
                    weak_agreement=w,
                    rules=frozenset({TrimRule.OVERTHINKING, TrimRule.REPETITION}),
                )
            else:
                config = TrimRConfig(overthink_m=m, underthink_max_thoughts=n, weak_agreement=w)
            report = await replay(
                traces,
                judge=RuleJudge(checker),
                checker=checker,
                config=ReplayConfig(trimr=config, paragraphs=False),
                count_tokens=counter.count,
            )
            rows.append((m, n, w, report.totals))
            t = report.totals
            print(f"M={m} N={n} weak={w}: {t.saved_pct:.1f}% {t.accuracy_change_pt:+.1f} pt")
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| M | N (thoughts) | weak agreement | trimmed | tokens saved | accuracy change | meets "
        "target |",
        "|---:|---:|---|---:|---:|---:|---|",
    ]
    for m, n, w, t in rows:
        meets = t.saved_pct >= 30.0 and abs(t.accuracy_change_pt) <= 1.0
        lines.append(
            f"| {m} | {'off' if n is None else n} | {'on' if w else 'off'} | {t.trimmed} | "
            f"{t.saved_pct:.1f}% | {t.accuracy_change_pt:+.1f} pt | "
            f"{'yes' if meets else 'no'} |"
        )
    best = max(
        (r for r in rows if abs(r[3].accuracy_change_pt) <= 1.0),
        key=lambda r: r[3].saved_pct,
        default=None,
    )
    costliest = min(
        (r for r in rows if r[3].saved_pct >= 30.0),
        key=lambda r: abs(r[3].accuracy_change_pt),
        default=None,
    )
    summary = []
    if best is not None:
        summary.append(
            f"most saved within 1 pt: {best[3].saved_pct:.1f}% (M = {best[0]}, "
            f"N = {best[1] or 'off'})"
        )
    if costliest is not None:
        summary.append(
            f"the cheapest setting saving ≥ 30% costs {costliest[3].accuracy_change_pt:+.1f} pt "
            f"(M = {costliest[0]}, N = {costliest[1] or 'off'})"
        )
    return "\n".join(lines) + ("\n\n" + "; ".join(summary) + "." if summary else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--m", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, nargs="+", default=[6, 8, 10, 14, 20])
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args()
    rows = asyncio.run(sweep(args.m, [None, *args.n], [False, True]))
    body = (
        "Rule judge with its generic settings (TARGET bar, whole thoughts; not the per-family "
        "presets of issue 16), complete traces of math500 and math_hendrycks (Sky-T1, "
        "R1-distill, QwQ, LIMO), verdicts without delay; all three rules on, underthinking at "
        "R = 0.5 of the recorded budget or after N thoughts without convergence (N off: "
        "underthinking off). M = 0 stops at the first answer over the bar. Thinking tokens are "
        f"{QWEN25_TOKENIZER} tokens. A forced stop answers with the candidate that had the most "
        "support so far (none, counted wrong, only without any candidate); the replay assumes "
        "the answer written after a trim is the one the branch had reached.\n\n" + table(rows)
    )
    print(body)
    if not args.no_write:
        write_section(
            "TrimR replay: rule settings frontier (issue 6)",
            body,
            ".venv/bin/python -m benchmarks.trim_frontier",
        )


if __name__ == "__main__":
    main()
