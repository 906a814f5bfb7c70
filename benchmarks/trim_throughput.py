"""TrimR on vs off: decode tokens/s on the same load (issue 6: the verifier never blocks decoding).

One real service (llama.cpp SmolLM2 pool, 4 slots, verifier workers as Ray actors). Each round
sends K concurrent streaming chat completions in slow mode (prompted thinking: the `generic`
family gets a system instruction and a GBNF grammar forcing `<think>…</think>`, so the output
family has thinking markers and trimmers attach) twice: once with `tts.trim: false` ("off") and
once with `tts.trim: true` ("on"), same prompts and seeds; the arm that goes first alternates
round by round so machine noise and prefix-cache reuse hit both alike.

The work must not change between the arms, so the TrimR rules are configured to check but never
cut: only the overthinking rule is enabled and its M is unreachable. Every closed thought is still
segmented, published to the Redis Stream, judged by a verifier actor and answered (and agreeing
answers still trigger consistency checks); the repetition detector still hashes the stream. The
request's thinking budget is set far above `max_tokens`; what closes thinking is the answer reserve
of `max_tokens` (`tts.answer_budget`, small here so nearly all of a stream is checked thinking),
at the same token in both arms.

Decode tokens/s per stream = (completion tokens − 1) ÷ (last token − first token), client-timed.
Evidence that trimming ran: the verifier actors' processed-check counters (`GET /v1/pools`) move
during the "on" rounds and not during the "off" rounds; each request record says `mode: slow`
and lists no TrimR intervention, and both arms count the same answer-reserve closes.

Run: `.venv/bin/python -m benchmarks.trim_throughput` (`--quick` for a 2-round smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import StreamTiming, p50, timed_stream, write_section
from benchmarks.service import cpu_pool, start_service

MODEL = "smollm2-135m-instruct"
TARGET = 0.98
#: Checks run, trims cannot fire: only overthinking is enabled, with an unreachable M.
RULES: dict[str, Any] = {"rules": ["overthinking"], "overthink_m": 1_000_000}
#: Answer tokens max_tokens keeps after thinking (`tts.answer_budget`): thinking is closed at
#: max_tokens - ANSWER_BUDGET in both arms alike, so nearly all of each stream is thinking that
#: the verifier checks (the default, 512, would close it at half of a 256-token stream).
ANSWER_BUDGET = 16
# Thoughts only form at paragraphs that open with a reflection marker; a small model copies a
# shown format far more readily than it follows a described one.
FORMAT = (
    "Think in short paragraphs separated by blank lines. Start every paragraph after the first "
    "with 'Wait,' and re-check the result before it. For example:\n\n"
    "First, 3 + 4 = 7.\n\nWait, let me check: 3 + 4 = 7. Yes, 7.\n\n"
    "Wait, counting up from 3 four times gives 4, 5, 6, 7. So 7.\n\n"
)
QUESTIONS = [
    "What is 17 + 25?",
    "What is 9 times 8?",
    "How many legs do three dogs and two birds have in total?",
    "What is 144 divided by 12?",
    "A book costs 12 dollars and a pen costs 3 dollars. What do two books and a pen cost?",
    "What is 15 squared?",
]


def body(*, trim: bool, seed: int, question: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": FORMAT + "Question: " + question}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": seed,
        # The request's own budget is never reached; what closes thinking is the answer reserve
        # of max_tokens (ANSWER_BUDGET), at the same token in both arms.
        "tts": {"mode": "slow", "trim": trim, "thinking_budget": 4 * max_tokens},
    }


@dataclass
class ArmResult:
    """Everything one arm measured over all its rounds."""

    timings: list[StreamTiming] = field(default_factory=list)
    round_tps: list[float] = field(default_factory=list)  # aggregate tokens ÷ round wall
    checks: int = 0  # verifier checks processed while this arm ran (and settled)
    slow: int = 0  # records whose mode decision was slow (prompted thinking)
    trims: int = 0  # interventions by a TrimR rule: must stay 0 for a like-for-like load
    closes: int = 0  # the answer reserve's forced closes: the same in both arms

    @property
    def decode_p50(self) -> float:
        return p50([t.decode_tps for t in self.timings if t.completion_tokens > 1])

    @property
    def aggregate_p50(self) -> float:
        return p50(self.round_tps)

    @property
    def tokens(self) -> int:
        return sum(t.completion_tokens for t in self.timings)


def verifier_processed(pools: Mapping[str, Any]) -> int:
    """Checks the verifier actors have judged so far (`GET /v1/pools` → `verifiers`)."""
    return sum(
        int(v.get("processed", 0)) for v in pools.get("verifiers") or [] if isinstance(v, dict)
    )


def record_evidence(record: Mapping[str, Any]) -> tuple[bool, int, int]:
    """(ran in slow mode, TrimR interventions, thinking-budget closes) from a request record
    (`GET /v1/requests/{id}`)."""
    slow = (record.get("mode") or {}).get("mode") == "slow"
    interventions = (record.get("trims") or {}).get("interventions") or []
    closes = sum(1 for iv in interventions if iv.get("rule") == "thinking_budget")
    return slow, len(interventions) - closes, closes


def round_throughput(timings: list[StreamTiming], wall_s: float) -> float:
    """All tokens of a round of concurrent streams ÷ the round's wall time."""
    return sum(t.completion_tokens for t in timings) / wall_s if wall_s > 0 else 0.0


def ratio(on: float, off: float) -> float:
    return on / off if off > 0 and not math.isnan(off) else float("nan")


def engaged(off: ArmResult, on: ArmResult) -> bool:
    """Trimming really ran in "on" (checks judged, all slow) and only there; no rule cut, and
    the answer reserve closed thinking as often in both arms."""
    requests = len(on.timings) + len(off.timings)
    return (
        on.checks > 0
        and off.checks == 0
        and on.slow + off.slow == requests > 0
        and on.trims == off.trims == 0
        and on.closes == off.closes
    )


def table(off: ArmResult, on: ArmResult) -> str:
    rows = [
        f"| {name} | {len(a.timings)} | {a.tokens} | {a.decode_p50:.2f} | {a.aggregate_p50:.2f} "
        f"| {a.slow}/{len(a.timings)} | {a.checks} | {a.trims} | {a.closes} |"
        for name, a in (("off", off), ("on", on))
    ]
    header = (
        "| trim | streams | completion tokens | decode tok/s p50 (per stream) | aggregate tok/s "
        "p50 (per round) | slow-mode records | verifier checks judged | trims | answer-reserve "
        "closes |\n|---|---|---|---|---|---|---|---|---|"
    )
    return header + "\n" + "\n".join(rows)


def summary(off: ArmResult, on: ArmResult) -> str:
    per_stream = ratio(on.decode_p50, off.decode_p50)
    aggregate = ratio(on.aggregate_p50, off.aggregate_p50)
    met = "met" if per_stream >= TARGET else "NOT met"
    text = (
        f"Ratio on ÷ off: **{per_stream:.3f}** per-stream decode tok/s p50 (target ≥ {TARGET}: "
        f"{met}), {aggregate:.3f} aggregate."
    )
    if not engaged(off, on):
        text += (
            " **Warning: the trimming path did not demonstrably run only in the 'on' arm (or an "
            "intervention changed the work), so this ratio proves nothing.**"
        )
    return text


async def _settled_checks(client: httpx.AsyncClient, url: str, *, max_wait_s: float = 15) -> int:
    """The verifiers' processed count once late verdicts stop arriving (attributes them)."""
    last = -1
    deadline = time.monotonic() + max_wait_s
    while time.monotonic() < deadline:
        now = verifier_processed((await client.get(f"{url}/v1/pools", timeout=30)).json())
        if now == last:
            return now
        last = now
        await asyncio.sleep(0.5)
    return last


async def _arm(
    client: httpx.AsyncClient,
    url: str,
    arm: ArmResult,
    *,
    trim: bool,
    round_no: int,
    concurrency: int,
    max_tokens: int,
) -> None:
    before = await _settled_checks(client, url)
    bodies = [
        body(
            trim=trim,
            seed=1000 * (round_no + 1) + k,
            question=QUESTIONS[(round_no + k) % len(QUESTIONS)],
            max_tokens=max_tokens,
        )
        for k in range(concurrency)
    ]
    start = time.perf_counter()
    timings = list(
        await asyncio.gather(
            *(timed_stream(client, f"{url}/v1/chat/completions", b) for b in bodies)
        )
    )
    wall = time.perf_counter() - start
    arm.checks += await _settled_checks(client, url) - before
    arm.timings += timings
    arm.round_tps.append(round_throughput(timings, wall))
    for t in timings:
        record = (await client.get(f"{url}/v1/requests/{t.response_id}", timeout=30)).json()
        slow, trims, closes = record_evidence(record)
        arm.slow += slow
        arm.trims += trims
        arm.closes += closes


async def measure(
    url: str, *, rounds: int, concurrency: int, max_tokens: int
) -> tuple[ArmResult, ArmResult]:
    off, on = ArmResult(), ArmResult()
    limits = httpx.Limits(max_connections=4 * concurrency + 8)
    async with httpx.AsyncClient(limits=limits) as client:
        # Warm-up (not measured): model pages, grammar, the verifiers' equivalence pools.
        for trim in (False, True):
            await asyncio.gather(
                *(
                    timed_stream(
                        client,
                        f"{url}/v1/chat/completions",
                        body(
                            trim=trim, seed=k, question=QUESTIONS[k % len(QUESTIONS)], max_tokens=32
                        ),
                    )
                    for k in range(concurrency)
                )
            )
        for r in range(rounds):
            order = [(False, off), (True, on)]
            for trim, arm in order if r % 2 == 0 else order[::-1]:
                await _arm(
                    client,
                    url,
                    arm,
                    trim=trim,
                    round_no=r,
                    concurrency=concurrency,
                    max_tokens=max_tokens,
                )
            print(
                f"round {r + 1}/{rounds}: decode p50 off {off.decode_p50:.2f}, "
                f"on {on.decode_p50:.2f} tok/s; checks on {on.checks}, off {off.checks}",
                flush=True,
            )
    return off, on


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=6, help="rounds per arm (arms alternate)")
    ap.add_argument("--concurrency", type=int, default=4, help="concurrent streams per round")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--verifiers", type=int, default=1, help="verifier Ray actors (≥ 1)")
    ap.add_argument("--quick", action="store_true", help="a 2-round smoke run")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    rounds = 2 if args.quick else args.rounds
    config = {
        "pools": [cpu_pool()],
        "ray": {"num_cpus": 2},
        "trim": {"verifier_workers": max(1, args.verifiers), "rules": RULES},
        "tts": {"answer_budget": ANSWER_BUDGET},
    }
    with tempfile.TemporaryDirectory() as tmp:
        service = start_service(config, Path(tmp))
        try:
            off, on = asyncio.run(
                measure(
                    service.url,
                    rounds=rounds,
                    concurrency=args.concurrency,
                    max_tokens=args.max_tokens,
                )
            )
        finally:
            service.stop()
    text = (
        "SmolLM2-135M-Instruct Q4_1 on one llama.cpp worker (4 slots, 2 threads), "
        f"{max(1, args.verifiers)} verifier actor(s). {rounds} rounds per arm of "
        f"{args.concurrency} concurrent streaming chat completions, {args.max_tokens} max tokens, "
        "temperature 0.8, fixed seeds, `tts.mode: slow` (prompted thinking: system instruction "
        "+ GBNF `<think>…</think>` grammar, so trimmers attach). The arms send the same prompts "
        "and seeds and alternate which goes first each round. To keep the work identical, the "
        "TrimR rules check but cannot cut (`trim.rules`: only overthinking, M = 1,000,000; the "
        "request's thinking budget is 4 × max tokens; the answer reserve of max tokens, "
        f"`tts.answer_budget: {ANSWER_BUDGET}`, closes thinking at the same token in both arms): "
        "every closed thought is still segmented, queued on "
        "the Redis Stream, judged by a verifier actor and answered. Decode tok/s per stream = "
        "(completion tokens − 1) ÷ (last − first token time), client-timed; aggregate = all "
        "tokens of a round ÷ its wall time. Evidence of trimming: the verifier actors' judged-"
        "check counter (`GET /v1/pools`), read once it settles after each arm, and the request "
        "records (`mode`, `trims`).\n\n" + table(off, on) + "\n\n" + summary(off, on)
    )
    print(text)
    if not args.no_write:
        write_section(
            "TrimR on vs off: decode throughput (issue 6)",
            text,
            f"python -m benchmarks.trim_throughput --rounds {rounds} --concurrency "
            f"{args.concurrency} --max-tokens {args.max_tokens} --verifiers {args.verifiers}",
        )


if __name__ == "__main__":
    main()
