"""Fast / slow / auto thinking on the CPU default (issue 8), and the prompted-thinking grammar.

``modes`` (default): the real service with Qwen2.5-Coder-1.5B-Instruct (family ``generic``: slow
thinking is the system instruction + the ``<think>`` grammar) answers the same MATH-500 problems
(the same number from each level 1-5, picked by a hash of the problem id) once per mode, sent as
``tts: {"mode": ...}``. Per mode: accuracy (``verifiers.grading.Grader``, math-verify), mean
completion tokens, mean latency; for auto, which mode its decisions ran.

``grammar``: the grammar and instruction of ``policies.switches`` straight against a llama.cpp
worker (no service): how often the output has ``<think>…</think>`` then an answer.

Run: ``.venv/bin/python -m benchmarks.modes [--limit 30] [--out F.jsonl]`` (``--from F.jsonl``
renders the section from a recorded run) and
``.venv/bin/python -m benchmarks.modes grammar [--limit 12]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import write_section
from benchmarks.service import cpu_pool, free_port, start_service
from evals.datasets import BuiltinDataset, Problem, load_builtin
from policies.modes import ThinkingMode
from policies.switches import ModePlan, SwitchTable
from tts_orchestrator.backends.chat_template import ChatTemplate, ChatTemplateInfo
from tts_orchestrator.models.pull import resolve_model_path
from verifiers.families import get_family
from verifiers.grading import Grader

MODEL = "qwen2.5-coder-1.5b-instruct"
MODES = ("fast", "slow", "auto")
LEVELS = (1, 2, 3, 4, 5)
INSTRUCTION = "Put your final answer within \\boxed{}."
GENERAL_PROMPTS = (
    "What is the capital of Australia?",
    "Write a Python one-liner that reverses a string s.",
    "Is 91 a prime number?",
)
THINK_FORMAT = re.compile(r"<think>\n(?P<thought>\S.*?)\n?</think>\n\n?(?P<answer>\S.*)", re.S)


def select_problems(limit: int) -> list[Problem]:
    """``ceil(limit / 5)`` problems per level, the lowest sha256(id) first; then cut to ``limit``
    taking levels in turn, so every prefix is level-balanced."""
    per_level = -(-limit // len(LEVELS))
    problems = load_builtin(BuiltinDataset.MATH500)

    def key(p: Problem) -> str:
        return hashlib.sha256(p.id.encode()).hexdigest()

    by_level = {
        level: sorted((p for p in problems if p.level == level), key=key)[:per_level]
        for level in LEVELS
    }
    interleaved = [by_level[lv][i] for i in range(per_level) for lv in LEVELS]
    return interleaved[:limit]


def messages_for(problem: Problem) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{problem.problem}\n\n{INSTRUCTION}"}]


@dataclass
class Outcome:
    mode: str
    problem_id: str
    level: int | None
    correct: bool
    tokens: int
    latency_s: float
    ran: str | None
    reasoning_chars: int
    error: str | None = None


def _ran_mode(tts: dict[str, Any] | None) -> str | None:
    """The mode the service says it ran (the lead's response block; tolerant of its shape)."""
    if not tts:
        return None
    mode = tts.get("mode")
    if isinstance(mode, dict):
        mode = mode.get("mode")
    return str(mode) if mode is not None else None


async def _ask(
    client: httpx.AsyncClient,
    grader: Grader,
    problem: Problem,
    *,
    mode: str,
    args: argparse.Namespace,
    seed: int,
) -> Outcome:
    body = {
        "model": MODEL,
        "messages": messages_for(problem),
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": seed,
        "tts": {"mode": mode},
    }
    start = time.perf_counter()
    try:
        r = await client.post("/v1/chat/completions", json=body, timeout=args.timeout)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        error = (
            f"HTTP {exc.response.status_code}: {exc.response.text[:300]}"
            if isinstance(exc, httpx.HTTPStatusError)
            else f"{type(exc).__name__}: {exc}"
        )
        return Outcome(mode, problem.id, problem.level, False, 0, 0.0, None, 0, error)
    latency = time.perf_counter() - start
    data = r.json()
    message = data["choices"][0]["message"]
    content = message.get("content") or ""
    grade = await grader.grade(content, problem.answer)
    return Outcome(
        mode=mode,
        problem_id=problem.id,
        level=problem.level,
        correct=grade.verdict,
        tokens=int(data["usage"]["completion_tokens"]),
        latency_s=latency,
        ran=_ran_mode(data.get("tts")),
        reasoning_chars=len(message.get("reasoning_content") or ""),
    )


async def run_modes(url: str, problems: list[Problem], args: argparse.Namespace) -> list[Outcome]:
    semaphore = asyncio.Semaphore(args.concurrency)
    outcomes: list[Outcome] = []
    async with httpx.AsyncClient(base_url=url) as client, Grader() as grader:

        async def one(problem: Problem, mode: str, seed: int) -> None:
            async with semaphore:
                outcome = await _ask(client, grader, problem, mode=mode, args=args, seed=seed)
            outcomes.append(outcome)
            status = outcome.error or f"{'✓' if outcome.correct else '✗'} {outcome.tokens} tok"
            print(f"[{len(outcomes)}] {mode:4} L{problem.level} {problem.id}: {status}", flush=True)

        # Modes in turn per problem, so a cut-short run still compares like with like.
        async with asyncio.TaskGroup() as group:
            for i, problem in enumerate(problems):
                for mode in args.modes:
                    group.create_task(one(problem, mode, args.seed + i))
    return outcomes


def modes_table(outcomes: list[Outcome], modes: tuple[str, ...]) -> str:
    rows = [
        "| mode | problems | accuracy | mean tokens | mean latency (s) | tokens vs slow "
        "| accuracy vs slow | ran as |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    stats: dict[str, tuple[float, float, float]] = {}
    for mode in modes:
        ok = [o for o in outcomes if o.mode == mode and o.error is None]
        if not ok:
            continue
        stats[mode] = (
            sum(o.correct for o in ok) / len(ok),
            statistics.fmean(o.tokens for o in ok),
            statistics.fmean(o.latency_s for o in ok),
        )
    slow = stats.get("slow")
    for mode, (accuracy, tokens, latency) in stats.items():
        ok = [o for o in outcomes if o.mode == mode and o.error is None]
        ran = Counter(o.ran or "?" for o in ok)
        ran_text = ", ".join(f"{k} {v}" for k, v in sorted(ran.items()))
        versus = (
            f"{tokens / slow[1] - 1:+.0%} | {100 * (accuracy - slow[0]):+.1f} pt"
            if slow and slow[1] > 0
            else "— | —"
        )
        rows.append(
            f"| {mode} | {len(ok)} | {accuracy:.1%} | {tokens:,.0f} | {latency:,.1f} | {versus} "
            f"| {ran_text} |"
        )
    errors = [o for o in outcomes if o.error is not None]
    if errors:
        rows.append(f"\n{len(errors)} requests failed, e.g. {errors[0].error}")
    return "\n".join(rows)


def qwen_pool(*, n_parallel: int, n_ctx: int) -> dict[str, Any]:
    pool = cpu_pool("cpu-qwen15", n_parallel=n_parallel, n_ctx=n_ctx)
    pool["model"] = MODEL
    pool["launch"]["model_path"] = MODEL
    return pool


SECTION = "Fast / slow / auto thinking modes"
#: Issue 8: auto saves at least this share of slow's tokens ...
TARGET_TOKENS_SAVED = 0.30
#: ... losing at most this many accuracy points.
TARGET_MAX_DROP_PT = 2.0


def target_check(outcomes: list[Outcome]) -> str:
    """The issue-8 target computed from the outcomes: met, missed, or not measurable."""

    def stats(mode: str) -> tuple[float, float, Counter[str]] | None:
        ok = [o for o in outcomes if o.mode == mode and o.error is None]
        if not ok:
            return None
        accuracy = sum(o.correct for o in ok) / len(ok)
        return accuracy, statistics.fmean(o.tokens for o in ok), Counter(o.ran or "?" for o in ok)

    auto, slow = stats("auto"), stats("slow")
    rule = (
        f"Issue-8 target (auto ≥ {TARGET_TOKENS_SAVED:.0%} fewer tokens than slow at ≤ "
        f"{TARGET_MAX_DROP_PT:g} pt lower accuracy)"
    )
    if auto is None or slow is None or slow[1] <= 0:
        return f"{rule}: **not measured** (needs auto and slow outcomes)."
    tokens = auto[1] / slow[1] - 1  # as the table's "tokens vs slow"
    accuracy_pt = 100 * (auto[0] - slow[0])
    met = -tokens >= TARGET_TOKENS_SAVED and -accuracy_pt <= TARGET_MAX_DROP_PT
    ran = ", ".join(f"{mode} {n}" for mode, n in sorted(auto[2].items()))
    return (
        f"{rule}: **{'met' if met else 'missed'}**: auto {tokens:+.0%} tokens and "
        f"{accuracy_pt:+.1f} pt accuracy vs slow (auto ran {ran})."
    )


def modes_body(
    outcomes: list[Outcome],
    *,
    modes: tuple[str, ...],
    temperature: float,
    max_tokens: int,
    concurrency: int,
    recorded: str | None = None,
) -> str:
    """The docs section's body, computed from the outcomes alone (pure)."""
    levels = Counter(o.level for o in {o.problem_id: o for o in outcomes}.values())
    problems = sum(levels.values())
    source = f"Recorded run `{recorded}` (every request's outcome). " if recorded else ""
    return (
        f"{source}{MODEL} (Q4_K_M, llama.cpp, family `generic`) on {problems} MATH-500 problems "
        f"(levels {dict(sorted(levels.items()))}, lowest sha256(id) per level), one request per "
        f"problem and mode, temperature {temperature}, max_tokens {max_tokens}, "
        f"{concurrency} in flight. Fast = system instruction to answer directly, without "
        "step-by-step working; slow = system instruction + `<think>` GBNF grammar; "
        "auto = the stage-1 router (shipped proxy model) with probe-and-escalate when uncertain. "
        "Accuracy by math-verify.\n\n"
        + modes_table(outcomes, modes)
        + "\n\n"
        + target_check(outcomes)
    )


def load_outcomes(path: str | Path) -> list[Outcome]:
    """Outcomes written by ``--out`` (one JSON object per line)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [Outcome(**json.loads(line)) for line in lines if line.strip()]


def main_modes(args: argparse.Namespace) -> None:
    if args.from_file:
        outcomes = load_outcomes(args.from_file)
        modes = tuple(m for m in MODES if any(o.mode == m for o in outcomes))
        body = modes_body(
            outcomes,
            modes=modes,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            concurrency=args.concurrency,
            recorded=args.from_file,
        )
        print(body)
        if not args.no_write:
            write_section(SECTION, body, recorded_command(args.from_file))
        return
    problems = select_problems(args.limit)
    levels = Counter(p.level for p in problems)
    print(f"{len(problems)} problems, levels {dict(sorted(levels.items()))}", flush=True)
    config = {
        "server": {"default_max_tokens": args.max_tokens, "request_timeout_s": args.timeout},
        "pools": [qwen_pool(n_parallel=args.concurrency, n_ctx=args.concurrency * args.ctx)],
        "ray": {"num_cpus": 2},
    }
    with tempfile.TemporaryDirectory(prefix="bench-modes-") as tmp:
        service = start_service(config, Path(tmp), timeout_s=600)
        try:
            outcomes = asyncio.run(run_modes(service.url, problems, args))
        finally:
            service.stop()
    if args.out:
        Path(args.out).write_text("".join(json.dumps(o.__dict__) + "\n" for o in outcomes))
    body = modes_body(
        outcomes,
        modes=tuple(args.modes),
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
    )
    print(body)
    if args.no_write:
        return
    command = f".venv/bin/python -m benchmarks.modes --limit {args.limit}" + (
        f" --out {args.out}" if args.out else ""
    )
    write_section(SECTION, body, command)


def recorded_command(path: str) -> str:
    return f".venv/bin/python -m benchmarks.modes --from {path}"


# -- the grammar on a bare worker --------------------------------------------------------------


@dataclass
class GrammarOutcome:
    prompt: str
    format_ok: bool
    closed_after_box: bool
    finish_reason: str
    tokens: int
    correct: bool | None
    output: str


def _start_worker(model: str, port: int) -> subprocess.Popen[bytes]:
    path = resolve_model_path(model)
    cmd = [sys.executable, "-m", "tts_orchestrator.backends.llamacpp_server"]
    cmd += ["--model", str(path), "--port", str(port), "--parallel", "2", "--ctx", "4096"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"worker at {url} not healthy after {timeout_s}s")


def slow_plan(messages: list[dict[str, str]]) -> ModePlan:
    return SwitchTable().plan(get_family("generic"), ThinkingMode.SLOW, messages)


async def worker_template(client: httpx.AsyncClient) -> ChatTemplate:
    """The worker's chat template, rendered locally as the service does."""
    props = (await client.get("/props", timeout=30)).json()
    return ChatTemplate(
        ChatTemplateInfo(
            template=props.get("chat_template") or "",
            bos_token=props.get("bos_token") or "",
            eos_token=props.get("eos_token") or "",
        )
    )


async def run_grammar(url: str, args: argparse.Namespace) -> list[GrammarOutcome]:
    prompts: list[tuple[str, str | None]] = [
        (f"{p.problem}\n\n{INSTRUCTION}", p.answer) for p in select_problems(args.limit)
    ]
    prompts += [(p, None) for p in GENERAL_PROMPTS[: args.general]]
    semaphore = asyncio.Semaphore(2)
    results: list[GrammarOutcome] = []
    async with httpx.AsyncClient(base_url=url) as client, Grader() as grader:
        template = await worker_template(client)

        async def one(i: int, text: str, gold: str | None) -> None:
            plan = slow_plan([{"role": "user", "content": text}])
            body = {
                "prompt": plan.prompt(template.render(plan.messages)),
                "grammar": plan.grammar,
                "max_tokens": args.max_tokens,
                "temperature": args.temperature,
                "seed": args.seed + i,
            }
            async with semaphore:
                r = await client.post("/v1/completions", json=body, timeout=args.timeout)
            data = r.json()
            out = data["choices"][0]["text"]
            match = THINK_FORMAT.fullmatch(out)
            finish = str(data["choices"][0]["finish_reason"])
            ok = match is not None and finish == "stop"
            boxed = match is not None and "\\boxed{" in match["thought"]
            correct = None
            if gold is not None:
                correct = (await grader.grade(out, gold)).verdict
            results.append(
                GrammarOutcome(
                    text[:60], ok, boxed, finish, data["usage"]["completion_tokens"], correct, out
                )
            )
            print(
                f"[{len(results)}] ok={ok} boxed_close={boxed} {finish} {text[:50]!r}", flush=True
            )

        async with asyncio.TaskGroup() as group:
            for i, (text, gold) in enumerate(prompts):
                group.create_task(one(i, text, gold))
    return results


def grammar_table(results: list[GrammarOutcome]) -> str:
    n = len(results)
    ok = sum(r.format_ok for r in results)
    length = sum(r.finish_reason == "length" for r in results)
    boxed = sum(r.closed_after_box for r in results)
    graded = [r for r in results if r.correct is not None]
    correct = sum(bool(r.correct) for r in graded)
    return "\n".join(
        [
            "| outputs | `<think>…</think>` + answer, stopped | hit max_tokens | "
            "thinking ended by its boxed result | MATH correct |",
            "|---:|---:|---:|---:|---:|",
            f"| {n} | {ok} | {length} | {boxed} | {correct}/{len(graded)} |",
        ]
    )


def main_grammar(args: argparse.Namespace) -> None:
    proc = None
    url = args.worker_url
    if url is None:
        port = free_port()
        proc = _start_worker(args.model, port)
        url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, 300)
        results = asyncio.run(run_grammar(url, args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    if args.out:
        Path(args.out).write_text("".join(json.dumps(r.__dict__) + "\n" for r in results))
    table = grammar_table(results)
    print(table)
    if args.no_write:
        return
    body = (
        f"`policies/grammars/think.gbnf` + the prompted-thinking system instruction "
        f"(`policies.switches`), sent straight to a llama.cpp worker ({args.model}): "
        f"{args.limit} MATH-500 problems and {args.general} general prompts, temperature "
        f"{args.temperature}, max_tokens {args.max_tokens}.\n\n" + table
    )
    command = f".venv/bin/python -m benchmarks.modes grammar --limit {args.limit}"
    write_section("Prompted thinking grammar", body, command)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="command")
    modes = sub.add_parser("modes", help="fast / slow / auto through the service (default)")
    grammar = sub.add_parser("grammar", help="the think grammar on a bare llama.cpp worker")
    for p in (ap, modes):
        p.add_argument("--limit", type=int, default=30, help="MATH-500 problems (levels mixed)")
        p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
        p.add_argument("--max-tokens", type=int, default=1536)
        p.add_argument("--ctx", type=int, default=4096, help="context per parallel slot")
        p.add_argument("--concurrency", type=int, default=2)
        p.add_argument("--out", default=None, help="JSONL of every request's outcome")
        p.add_argument(
            "--from",
            dest="from_file",
            default=None,
            help="render the section from a recorded --out JSONL (no run; pass the run's "
            "--temperature / --max-tokens / --concurrency)",
        )
    grammar.add_argument("--limit", type=int, default=10, help="MATH-500 problems")
    grammar.add_argument("--general", type=int, default=3, help="general prompts (max 3)")
    grammar.add_argument("--model", default=MODEL, help="catalog name or GGUF path")
    grammar.add_argument("--worker-url", default=None, help="use this worker, start none")
    grammar.add_argument("--max-tokens", type=int, default=1024)
    grammar.add_argument("--out", default=None, help="JSONL of every output")
    for p in (ap, modes, grammar):
        p.add_argument("--temperature", type=float, default=0.7)
        p.add_argument("--seed", type=int, default=1234)
        p.add_argument("--timeout", type=float, default=1800.0, help="per request, seconds")
        p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "grammar":
        main_grammar(args)
    else:
        main_modes(args)


if __name__ == "__main__":
    main()
