"""Grader agreement with the recorded traces' own correctness labels (issue 5).

Grades every trace output in evals/data/traces against its ground truth with our grader
(math-verify under our process-pool timeout, plus the Qwen-style normalise-and-compare verdict)
and compares with the source harness's `is_correct` label. Writes docs/grader-agreement.md.
Run: `.venv/bin/python -m benchmarks.grader_agreement`.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

from benchmarks.common import machine
from verifiers.grading import Grader
from verifiers.traces import Trace, load_traces

TRACES = Path(__file__).resolve().parents[1] / "evals" / "data" / "traces"
OUT = Path(__file__).resolve().parents[1] / "docs" / "grader-agreement.md"


NOTES = """## Notes on the disagreements (audited by hand)

- **Label says wrong, we say right** — mostly the Minerva physics/ODE answers where the model
  wrote the same expression as the reference in another form (`W(s) = (1-e^{-sT})/s` vs
  `1/s - e^{-sT}/s`, `cosh(at)` vs `(e^{at}+e^{-at})/2`, `100\\sqrt{p}` vs `100p^{1/2}`): the
  source's string-based harness missed the equivalence; math-verify finds it. On MATH-500,
  `3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}` vs `3 \\pm 2\\sqrt{2}` is the same answer.
- **Label says right, we say wrong** — no answer after the thinking (`math500/25`: the boxed
  answer exists only inside thinking; `math500/45` ends on a displayed equation with no answer
  phrase), answers with extra words (`12^{th} grade` vs `12`; `E_1 with probability 1/3 ...`;
  `A = ..., for \\omega^2 \\neq 4`), and one the source marked right although the extracted
  value is a different quantity (`minerva_math/176`). We prefer strictness here: a grader that
  accepts unfinished thinking or a different quantity inflates accuracy.
- Two comparisons of long ODE expressions hit the 3 s math-verify timeout and count as wrong.
"""


def _group(t: Trace) -> str:
    if t.model.startswith("Sky-T1"):
        state = "complete" if t.complete else "cut off"
        return f"Sky-T1 {t.dataset} ({state})"
    return f"{t.model.split('/')[-1]} ({t.dataset})"


async def main() -> None:
    traces = load_traces(sorted(TRACES.glob("*.jsonl")))
    grader = Grader()
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    disagreements: list[tuple[Trace, str | None, bool]] = []
    sem = asyncio.Semaphore(8)

    async def one(t: Trace) -> None:
        async with sem:
            g = await grader.grade(t.output, t.ground_truth)
        c = counts[_group(t)]
        c["n"] += 1
        c["agree"] += g.verdict == t.is_correct
        c["alt_agree"] += g.alt_verdict == t.is_correct
        c["no_answer"] += g.extracted is None
        c["verdict_disagreement"] += g.disagreement
        if g.verdict != t.is_correct and t.complete:
            disagreements.append((t, g.extracted, g.verdict))

    await asyncio.gather(*(one(t) for t in traces))
    rows = [
        "| traces | n | math-verify agrees with label | Qwen-style agrees | no answer found | "
        "math-verify ≠ Qwen-style |",
        "|---|---|---|---|---|---|",
    ]
    for group in sorted(counts):
        c = counts[group]
        rows.append(
            f"| {group} | {c['n']} | {c['agree']} ({c['agree'] / c['n']:.1%}) | "
            f"{c['alt_agree']} ({c['alt_agree'] / c['n']:.1%}) | {c['no_answer']} | "
            f"{c['verdict_disagreement']} |"
        )
    detail = ["| trace | label | our verdict | extracted | ground truth |", "|---|---|---|---|---|"]
    for t, extracted, verdict in sorted(disagreements, key=lambda d: d[0].id):
        detail.append(
            f"| `{t.id}` | {t.is_correct} | {verdict} | `{extracted}` | `{t.ground_truth}` |"
        )
    OUT.write_text(
        "# Grader agreement with the recorded traces' labels\n\n"
        "Command: `python -m benchmarks.grader_agreement`  \n"
        f"Machine: {machine()}\n\n"
        "Our grader strips the reasoning (an output whose thinking never closes has no answer), "
        "extracts the final answer (last `\\boxed{}` first) and compares it with the ground truth "
        "with math-verify in a worker process under our own timeout. The label is the source "
        "harness's own `is_correct`. Cut-off traces (`complete == false`) mostly have no answer "
        "after thinking, so we grade them wrong; their source harness often extracted one from "
        "the unfinished thinking, which is where most of the disagreement on them comes from.\n\n"
        + "\n".join(rows)
        + "\n\n## Disagreements on complete traces\n\n"
        "Each is listed so it can be audited; see the notes below the table.\n\n"
        + "\n".join(detail)
        + "\n\n"
        + NOTES
    )
    print("\n".join(rows))
    print(f"{len(disagreements)} disagreements on complete traces; written to {OUT}")


if __name__ == "__main__":
    asyncio.run(main())
