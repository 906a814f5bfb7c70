"""DeepConf offline on a recorded sample bank (issue 17): confidence early stop vs majority@N
and the confidence-weighted vote vs majority, each problem replayed as one request through the
service's own presenter, vote and DeepConf gate (see `evals.confidence_replay`).

Run: `python -m benchmarks.deepconf --bank evals/data/deepconf/<bank>.jsonl` (add
`--no-docs` to print only). The targets (≥ 30% fewer tokens at ≥ −1 pt accuracy; weighted ≥
majority) are checked by the command, never typed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from pathlib import Path

from evals.confidence_replay import (
    BankSample,
    Method,
    Summary,
    deepconf_methods,
    evaluate,
    load_bank,
)
from evals.docs import write_section
from tts_orchestrator.config.pools import LaunchSpec
from tts_orchestrator.protocol import TtsOptions
from verifiers.confidence import ConfidenceConfig, ConfidenceMeasure
from verifiers.equivalence import EquivalenceChecker

SECTION = "DeepConf: confidence early stop and weighted vote (issue 17)"
TOKENS_SAVED_TARGET = 0.30
ACCURACY_SLACK_PT = 1.0
#: The slots of a default llama.cpp pool (`deploy/configs/cpu-default.yaml` too).
POOL_SLOTS = LaunchSpec.model_fields["n_parallel"].default


def _table(rows: list[Summary], base: Summary) -> str:
    lines = [
        "| method | problems | accuracy | tokens | vs majority@N | pruned | stopped early |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        saved = 1 - r.tokens / base.tokens if base.tokens else 0.0
        delta = 0.0 + 100 * (r.accuracy - base.accuracy)  # 0.0 +: no "-0.0"
        lines.append(
            f"| {r.name} | {r.problems} | {100 * r.accuracy:.1f}% | {r.tokens:,} | "
            f"{0.0 - 100 * saved:+.1f}% tokens, {delta:+.1f} pt | "
            f"{r.pruned} | {r.stopped} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Summary], *, label: str) -> list[str]:
    by = {r.name: r for r in rows}
    base, weighted, stop = (
        by["majority@N"],
        by["confidence-weighted@N"],
        by["confidence early stop"],
    )
    saved = 1 - stop.tokens / base.tokens if base.tokens else 0.0
    delta = 100 * (stop.accuracy - base.accuracy)
    met = saved >= TOKENS_SAVED_TARGET and delta >= -ACCURACY_SLACK_PT
    out = [
        f"- {label}: early stop {100 * saved:.1f}% fewer tokens at {delta:+.1f} pt accuracy: "
        f"target (≥ {100 * TOKENS_SAVED_TARGET:.0f}% at ≥ −{ACCURACY_SLACK_PT:.0f} pt) "
        f"**{'met' if met else 'not met'}**."
    ]
    w = 100 * (weighted.accuracy - base.accuracy)
    verdict = "met" if w > 0 else ("met (a tie)" if w == 0 else "not met")
    out.append(f"- {label}: confidence-weighted vote vs majority: {w:+.1f} pt: **{verdict}**.")
    return out


Bank = dict[str, list[BankSample]]
#: The settings the held-out selection tries: the window (and tail) as a fraction of the median
#: sample length, warm-up branches, η, τ and the voting measure (DeepConf's own among them).
GRID: dict[str, tuple[float | str, ...]] = {
    "span": (1 / 16, 1 / 8, 1 / 4),
    "warmup": (2, 3, 4),
    "keep": (0.9, 0.5, 0.1),
    "tau": (0.8, 0.9, 0.95),
    "measure": (ConfidenceMeasure.LOWEST_GROUP.value, ConfidenceMeasure.TAIL.value),
}


def scaled_config(bank: Bank, *, span: float = 1 / 8, **overrides: object) -> ConfidenceConfig:
    """DeepConf's settings scaled to the bank's answers. DeepConf's 2048-token window (and
    tail) is about an eighth of its traces; the same ``span`` of this bank's median sample
    length keeps its meaning here. Only lengths are read (never an answer or its grade)."""
    lengths = sorted(s.tokens for samples in bank.values() for s in samples)
    median = lengths[len(lengths) // 2] if lengths else 256
    window = max(8, round(median * span))
    return ConfidenceConfig.model_validate({"window": window, "tail": window, **overrides})


def halves(bank: Bank) -> tuple[Bank, Bank]:
    """Problems split by position in id order: even ones select settings, odd ones report."""
    keys = sorted(bank)
    return {k: bank[k] for k in keys[0::2]}, {k: bank[k] for k in keys[1::2]}


async def select(bank: Bank, lengths_from: Bank, n: int, slots: int | None) -> ConfidenceConfig:
    """The grid's setting with the most tokens saved at accuracy ≥ majority@N − the slack on
    ``bank`` (the selection half; ties: the earlier grid point), else the service defaults."""
    grid = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    configs = [scaled_config(lengths_from, span=float(p.pop("span")), **p) for p in grid]
    stop = TtsOptions(n_branches=n, aggregation="confidence", early_stop="confidence")
    methods = [deepconf_methods(configs[0], n=n)[0]] + [
        Method(str(i), stop, confidence=c) for i, c in enumerate(configs)
    ]
    with EquivalenceChecker() as checker:
        base, *rows = await evaluate(bank, methods, equivalent=checker.equivalent, slots=slots)
    floor = base.accuracy - ACCURACY_SLACK_PT / 100 - 1e-9
    fit = [(r.tokens, i) for i, r in enumerate(rows) if r.accuracy >= floor]
    return configs[min(fit)[1]] if fit else scaled_config(lengths_from)


async def measure(bank: Bank, config: ConfidenceConfig, n: int, slots: int | None) -> list[Summary]:
    low = config.model_copy(update={"keep": 0.1})
    methods = [
        *deepconf_methods(config, n=n),
        *(
            Method(f"{m.name} (DeepConf-low, η=0.1)", m.tts, confidence=low)
            for m in deepconf_methods(low, n=n)
            if m.confidence is not None and config.keep != low.keep
        ),
    ]
    with EquivalenceChecker() as checker:
        return await evaluate(bank, methods, equivalent=checker.equivalent, slots=slots)


def _settings(config: ConfidenceConfig) -> str:
    used = config.model_dump(mode="json", exclude={"top_logprobs"})  # k is the bank's
    return ", ".join(f"{k}={v}" for k, v in used.items())


Run = tuple[str, ConfidenceConfig, list[Summary]]


def render(runs: list[Run], bank: Path, n: int) -> str:
    parts = [
        f"Bank: `{bank}` (N = {n} samples per problem; see `evals/data/deepconf/README.md`).",
        "Window and tail are a fraction of the bank's median sample length (DeepConf's 2048 is "
        "about an eighth of its traces); the other settings are the service's defaults unless "
        "selected. *Selected* settings: the grid point with the most tokens saved at accuracy "
        f"≥ majority@N − {ACCURACY_SLACK_PT:.0f} pt on the even-numbered problems (ids sorted), "
        "reported on the odd-numbered ones only; grid: "
        + "; ".join(
            f"{k} ∈ {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vs)}}}"
            for k, vs in GRID.items()
        )
        + ".",
    ]
    for label, config, rows in runs:
        base = next(r for r in rows if r.name == "majority@N")
        parts += [
            "",
            f"**{label}** ({_settings(config)})",
            "",
            _table(rows, base),
            "",
            *verdicts(rows, label=label),
        ]
    parts += [
        "",
        "Each problem is one request replayed through the service's own `VotingPresenter`, "
        "`BranchConfidence` gate and equivalence check, token by token with the recorded "
        "confidences (running branches decode one token per step: equal rates). Tokens are "
        "those generated before a branch finished, was pruned or was stopped; a branch still "
        "queued for a slot when the request stops generated none. The DeepConf-low rows are "
        "the paper's other setting, shown, not chosen. Correctness only grades and selects "
        "on the selection half; it never steers a request.",
    ]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--tail", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--keep", type=float, default=None)
    ap.add_argument("--tau", type=float, default=None)
    ap.add_argument("--measure", type=ConfidenceMeasure, default=None)
    ap.add_argument(
        "--select",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also select settings on half the problems and report them on the other half.",
    )
    ap.add_argument("--docs", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    names = ("window", "tail", "warmup", "keep", "tau", "measure")
    overrides = {k: v for k in names if (v := getattr(args, k)) is not None}
    bank = load_bank(args.bank)
    n = max((len(s) for s in bank.values()), default=0)
    bank = {k: v for k, v in bank.items() if len(v) == n}  # complete problems only
    config = scaled_config(bank, **overrides)
    pool = f"a pool of {POOL_SLOTS} slots (the default llama.cpp pool; the bank's server)"
    every = f"all {n} branches at once"
    runs: list[Run] = [
        (
            f"All {len(bank)} problems, {pool}",
            config,
            asyncio.run(measure(bank, config, n, POOL_SLOTS)),
        ),
        (f"All {len(bank)} problems, {every}", config, asyncio.run(measure(bank, config, n, None))),
    ]
    if args.select:
        selection, held_out = halves(bank)
        chosen = asyncio.run(select(selection, bank, n, POOL_SLOTS))
        for label, slots in ((pool, POOL_SLOTS), (every, None)):
            rows = asyncio.run(measure(held_out, chosen, n, slots))
            runs.append((f"Selected, {len(held_out)} held-out problems, {label}", chosen, rows))
    body = render(runs, args.bank, n)
    print(body)
    if args.docs:
        flags = "".join(f" --{k} {v}" for k, v in overrides.items())
        flags += "" if args.select else " --no-select"
        write_section(SECTION, body, f"python -m benchmarks.deepconf --bank {args.bank}{flags}")


if __name__ == "__main__":
    main()
