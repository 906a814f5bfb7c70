"""How much can `auto` save on a model without a trained thinking switch? (issue 8)

Two measurements on the problems of a recorded ``benchmarks.modes`` run (its JSONL, ``--from``):

* **any fast / slow choice**: per problem the run has a fast and a slow outcome. Choosing fast
  everywhere is the cheapest any per-request fast / slow choice can be (when fast is shorter);
  the oracle picks, per problem, the cheaper mode among those that were correct.
* **answer-only probes**: the cheapest probe there is - ``k`` samples forced by a GBNF grammar to
  be nothing but ``\\boxed{...}``, straight on a llama.cpp worker. Per sample accuracy, how often
  the ``k`` agree, how often an agreed answer is right, and what probe-then-escalate would cost and
  score: the probes' answer when all ``k`` agree, else the recorded slow outcome (tokens: probes +
  slow).

Run: ``.venv/bin/python -m benchmarks.mode_headroom --from benchmarks/results/modes-30.jsonl``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import write_section
from benchmarks.modes import (
    INSTRUCTION,
    MODEL,
    _start_worker,
    _wait_healthy,
    select_problems,
    worker_template,
)
from benchmarks.service import free_port
from verifiers.grading import Grader

ANSWER_ONLY = r"""root ::= "\\boxed{" body "}"
body ::= ([^{}\n] | "{" body "}")*
"""
SYSTEM = "Reply with only the final answer in \\boxed{}, nothing else."


@dataclass
class Probe:
    problem_id: str
    sample: int
    answer: str | None
    correct: bool
    tokens: int


def load_run(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """problem id → mode → outcome, from a ``benchmarks.modes --out`` JSONL."""
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        by.setdefault(row["problem_id"], {})[row["mode"]] = row
    return by


async def run_probes(url: str, limit: int, k: int, args: argparse.Namespace) -> list[Probe]:
    problems = select_problems(limit)
    semaphore = asyncio.Semaphore(2)
    probes: list[Probe] = []
    async with httpx.AsyncClient(base_url=url) as client, Grader() as grader:
        template = await worker_template(client)

        async def one(problem: Any, sample: int) -> None:
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{problem.problem}\n\n{INSTRUCTION}"},
            ]
            body = {
                "prompt": template.render(messages),
                "grammar": ANSWER_ONLY,
                "max_tokens": args.max_tokens,
                "temperature": args.temperature,
                "seed": args.seed + sample,
            }
            async with semaphore:
                r = await client.post("/v1/completions", json=body, timeout=600)
            data = r.json()
            text = data["choices"][0]["text"]
            grade = await grader.grade(text, problem.answer)
            probes.append(
                Probe(
                    problem.id,
                    sample,
                    grader.answer_of(text),
                    bool(grade.verdict),
                    int(data["usage"]["completion_tokens"]),
                )
            )

        async with asyncio.TaskGroup() as group:
            for problem in problems:
                for sample in range(k):
                    group.create_task(one(problem, sample))
    return probes


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def tables(run: dict[str, dict[str, dict[str, Any]]], probes: list[Probe], k: int) -> str:
    ids = [pid for pid in run if "fast" in run[pid] and "slow" in run[pid]]
    n = len(ids)
    slow_tok = sum(run[p]["slow"]["tokens"] for p in ids)
    slow_ok = sum(run[p]["slow"]["correct"] for p in ids)
    fast_tok = sum(run[p]["fast"]["tokens"] for p in ids)
    fast_ok = sum(run[p]["fast"]["correct"] for p in ids)
    oracle_tok = oracle_ok = 0
    for p in ids:
        right = [m for m in ("fast", "slow") if run[p][m]["correct"]]
        pick = min(right or ["fast", "slow"], key=lambda m: run[p][m]["tokens"])
        oracle_tok += run[p][pick]["tokens"]
        oracle_ok += bool(right)
    rows = [
        "| choice | accuracy | mean tokens | tokens vs slow |",
        "|---|---:|---:|---:|",
        f"| slow everywhere | {_pct(slow_ok, n)} | {slow_tok / n:.0f} | +0% |",
        f"| fast everywhere | {_pct(fast_ok, n)} | {fast_tok / n:.0f} | "
        f"{100.0 * (fast_tok - slow_tok) / slow_tok:+.0f}% |",
        f"| oracle (cheapest correct mode per problem) | {_pct(oracle_ok, n)} | "
        f"{oracle_tok / n:.0f} | {100.0 * (oracle_tok - slow_tok) / slow_tok:+.0f}% |",
    ]
    by: dict[str, list[Probe]] = {}
    for probe in probes:
        by.setdefault(probe.problem_id, []).append(probe)
    unanimous = unanimous_ok = auto_ok = auto_tok = 0
    for p in ids:
        samples = by.get(p, [])
        votes = Counter(s.answer for s in samples if s.answer)
        top = votes.most_common(1)
        auto_tok += sum(s.tokens for s in samples)
        if top and top[0][1] == k:
            unanimous += 1
            agreed_ok = next(s.correct for s in samples if s.answer == top[0][0])
            unanimous_ok += agreed_ok
            auto_ok += agreed_ok
        else:
            auto_tok += run[p]["slow"]["tokens"]
            auto_ok += run[p]["slow"]["correct"]
    graded = [s for s in probes if s.problem_id in run]
    probe_rows = [
        "| answer-only samples | sample accuracy | mean tokens per sample | problems where all "
        f"{k} agree | agreed answer correct | probe, else slow: accuracy | mean tokens | "
        "tokens vs slow |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(graded)} | {_pct(sum(s.correct for s in graded), len(graded))} | "
        f"{sum(s.tokens for s in graded) / max(len(graded), 1):.1f} | {unanimous}/{n} | "
        f"{unanimous_ok}/{unanimous} | {_pct(auto_ok, n)} | {auto_tok / n:.0f} | "
        f"{100.0 * (auto_tok - slow_tok) / slow_tok:+.0f}% |",
    ]
    oracle_saved = 100.0 * (slow_tok - oracle_tok) / slow_tok
    reading = (
        f"Reading: the issue-8 target is auto ≥ 30% fewer tokens than slow at ≤ 2 pt lower "
        f"accuracy. Choosing fast or slow per request saves at most {oracle_saved:.0f}% here even "
        "with an oracle, because fast costs as much as it does; a cheaper fast needs a model "
        "with a trained off switch. The cheapest probe (an answer alone) agrees on wrong answers "
        f"({unanimous - unanimous_ok} of {unanimous} agreed answers wrong), so escalating on "
        "disagreement does not keep slow's accuracy."
    )
    return "\n".join(rows) + "\n\n" + "\n".join(probe_rows) + "\n\n" + reading


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--from", dest="run", type=Path, required=True, help="modes run JSONL")
    ap.add_argument("--k", type=int, default=3, help="answer-only samples per problem")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = ap.parse_args()
    run = load_run(args.run)
    port = free_port()
    proc: subprocess.Popen[bytes] = _start_worker(args.model, port)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, 300)
        probes = asyncio.run(run_probes(url, len(run), args.k, args))
    finally:
        proc.terminate()
        proc.wait(30)
    table = tables(run, probes, args.k)
    body = (
        f"{args.model}, the {len(run)} MATH-500 problems of the recorded modes run "
        f"`{args.run}` (its fast and slow outcomes, temperature 0.7). Answer-only probes: "
        f"{args.k} samples per problem at temperature {args.temperature}, a GBNF grammar "
        "allowing only `\\boxed{...}`, graded by math-verify.\n\n" + table
    )
    print(body)
    if not args.no_write:
        write_section(
            "Auto-mode headroom on a model without a thinking switch (issue 8)",
            body,
            f".venv/bin/python -m benchmarks.mode_headroom --from {args.run}",
        )


if __name__ == "__main__":
    main()
