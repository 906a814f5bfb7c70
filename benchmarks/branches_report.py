"""The branch-parallel benchmark's result and its docs section (pure: no service, no I/O but
the result file), so a recorded result renders the same section the run did."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SECTION = "Branch-parallel throughput and concurrency (issue 3)"
#: Issue 3: one request with N branches keeps this share of N direct requests' throughput.
THROUGHPUT_TARGET = 0.97
#: The N the throughput target is stated for.
TARGET_N = 8
#: A concurrency level "sustains" when it adds at most this much latency over the ideal.
ADDED_LATENCY_LIMIT = 0.10


@dataclass(frozen=True)
class ThroughputRow:
    """Medians over repetitions: N direct requests vs one request with N branches."""

    n: int
    reps: int
    direct_tps: float
    orchestrated_tps: float
    ratio: float  # orchestrated / direct, from the unrounded medians


@dataclass(frozen=True)
class ConcurrencyRow:
    """One request with ``n`` replay branches of ``tokens`` tokens at ``rate`` tokens/s."""

    n: int
    tokens: int
    rate: float
    ideal_s: float
    wall_s: float
    added: float  # wall / ideal - 1, from the unrounded times

    @classmethod
    def measured(cls, n: int, tokens: int, rate: float, wall_s: float) -> ConcurrencyRow:
        ideal = tokens / rate
        return cls(n, tokens, rate, ideal, wall_s, wall_s / ideal - 1)


@dataclass
class BranchesResult:
    command: str  # the run that measured it
    measured_at: str
    max_tokens: int
    rate: float
    throughput: list[ThroughputRow] = field(default_factory=list)
    concurrency: list[ConcurrencyRow] = field(default_factory=list)
    note: str = ""  # provenance, e.g. how a result was recorded

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BranchesResult:
        raw: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
        raw["throughput"] = [ThroughputRow(**row) for row in raw.get("throughput", [])]
        raw["concurrency"] = [ConcurrencyRow(**row) for row in raw.get("concurrency", [])]
        return cls(**raw)


def recorded_command(path: str) -> str:
    return f"python -m benchmarks.branches --from {path}"


def throughput_verdict(rows: list[ThroughputRow]) -> str:
    """The N = 8 ratio against its target, computed (never typed)."""
    row = next((r for r in rows if r.n == TARGET_N), None)
    if row is None:
        return f"N = {TARGET_N} was not measured: the ≥ {THROUGHPUT_TARGET} target is untested."
    met = row.ratio >= THROUGHPUT_TARGET
    return (
        f"N = {TARGET_N}: ratio **{row.ratio:.3f}** against the ≥ {THROUGHPUT_TARGET} target: "
        f"**{'met' if met else 'missed'}**."
    )


def concurrency_claim(rows: list[ConcurrencyRow]) -> str:
    """What the levels show: a limit only when a level went past it, else the largest tried."""
    if not rows:
        return "No concurrency level was measured."
    limit = f"{ADDED_LATENCY_LIMIT:.0%} added latency"
    failed = next((r for r in rows if r.added > ADDED_LATENCY_LIMIT), None)
    within = [
        r for r in rows if r.added <= ADDED_LATENCY_LIMIT and (failed is None or r.n < failed.n)
    ]
    if failed is None:
        top = rows[-1]
        return (
            f"Every level stayed within {limit}: the largest tried, **{top.n} concurrent "
            f"branches** ({top.added:+.1%}), is a lower bound on what one orchestrator process "
            "sustains on this machine, not a limit found (no level failed)."
        )
    if not within:
        return f"Even {failed.n} branches added {failed.added:+.1%} (over {limit})."
    best = within[-1]
    return (
        f"One orchestrator process sustains **{best.n} concurrent branches** within {limit} on "
        f"this machine; {failed.n} added {failed.added:+.1%}."
    )


def branches_body(result: BranchesResult, *, recorded: str | None = None) -> str:
    source = (
        f"Recorded result `{recorded}` of `{result.command}` ({result.measured_at})"
        + (f"; {result.note}" if result.note else "")
        + ".\n\n"
        if recorded
        else ""
    )
    throughput = "\n".join(
        [
            "| branches N | repetitions | direct tok/s (N concurrent requests) | orchestrated "
            f"tok/s (1 request, N branches) | ratio | ≥ {THROUGHPUT_TARGET} |",
            "|---|---|---|---|---|---|",
        ]
        + [
            f"| {r.n} | {r.reps} | {r.direct_tps:.1f} | {r.orchestrated_tps:.1f} | {r.ratio:.3f} "
            f"| {'yes' if r.ratio >= THROUGHPUT_TARGET else 'no'} |"
            for r in result.throughput
        ]
    )
    concurrency = "\n".join(
        [
            "| concurrent branches | tokens per branch | tok/s per branch | aggregate tok/s "
            "offered | ideal wall (s) | measured wall (s) | added latency |",
            "|---|---|---|---|---|---|---|",
        ]
        + [
            f"| {r.n} | {r.tokens} | {r.rate:.0f} | {r.n * r.rate:.0f} | {r.ideal_s:.2f} "
            f"| {r.wall_s:.2f} | {r.added * 100:+.1f}% |"
            for r in result.concurrency
        ]
    )
    return (
        f"{source}**Throughput** — SmolLM2-135M-Instruct Q4_1, one llama.cpp worker with 8 slots "
        f"(2 threads), {result.max_tokens} max tokens, temperature 0.8, no early stop (every "
        f"branch runs to its end). {throughput_verdict(result.throughput)}\n\n{throughput}\n\n"
        f"**Concurrency** — replay engine at {result.rate:.0f} tokens/s per branch, one request "
        "with N branches through API → Ray pool actor → replay worker → vote; added latency = "
        f"measured wall ÷ ideal − 1. {concurrency_claim(result.concurrency)}\n\n{concurrency}"
    )
