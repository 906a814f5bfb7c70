"""DeepConf offline on a recorded sample bank (issue 17): confidence early stop vs majority@N
and the confidence-weighted vote vs majority, through `verifiers.confidence` and
`verifiers.voting` (the service's code; see `evals.confidence_replay`).

Run: `python -m benchmarks.deepconf --bank evals/data/deepconf/<bank>.jsonl` (add
`--no-docs` to print only). The targets (≥ 30% fewer tokens at ≥ −1 pt accuracy; weighted ≥
majority) are checked by the command, never typed.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from evals.confidence_replay import Summary, evaluate, load_bank
from evals.docs import write_section
from verifiers.confidence import ConfidenceConfig

SECTION = "DeepConf: confidence early stop and weighted vote (issue 17)"
TOKENS_SAVED_TARGET = 0.30
ACCURACY_SLACK_PT = 1.0


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


def verdicts(rows: list[Summary]) -> list[str]:
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
        f"- Early stop: {100 * saved:.1f}% fewer tokens at {delta:+.1f} pt accuracy: "
        f"target (≥ {100 * TOKENS_SAVED_TARGET:.0f}% at ≥ −{ACCURACY_SLACK_PT:.0f} pt) "
        f"**{'met' if met else 'not met'}**."
    ]
    w = 100 * (weighted.accuracy - base.accuracy)
    verdict = "met" if w > 0 else ("met (a tie)" if w == 0 else "not met")
    out.append(f"- Confidence-weighted vote vs majority: {w:+.1f} pt: **{verdict}**.")
    return out


def render(rows: list[Summary], config: ConfidenceConfig, bank: Path, n: int) -> str:
    base = next(r for r in rows if r.name == "majority@N")
    used = config.model_dump(mode="json", exclude={"top_logprobs"})  # k is the bank's
    settings = ", ".join(f"{k}={v}" for k, v in used.items())
    return "\n".join(
        [
            f"Bank: `{bank}` (N = {n} samples per problem; see `evals/data/deepconf/README.md`).",
            f"DeepConf settings: {settings}.",
            "",
            _table(rows, base),
            "",
            *verdicts(rows),
            "",
            "The verdicts are those of the default settings (first rows); the DeepConf-low rows "
            "are the paper's other setting, shown, not chosen. "
            "Early stop replays the N samples as parallel branches decoding one token per step "
            "(equal rates); tokens are those generated before a branch finished, was pruned or "
            "was stopped. Correctness only grades; it never steers a decision.",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument("--window", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--keep", type=float, default=None)
    ap.add_argument("--tau", type=float, default=None)
    ap.add_argument("--docs", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    overrides = {
        k: v for k in ("window", "warmup", "keep", "tau") if (v := getattr(args, k)) is not None
    }
    config = ConfidenceConfig(**overrides)
    bank = load_bank(args.bank)
    n = max((len(s) for s in bank.values()), default=0)
    bank = {k: v for k, v in bank.items() if len(v) == n}  # complete problems only
    # DeepConf's two published settings: the service default keeps η = 90% (DeepConf-high);
    # DeepConf-low keeps 10%. Neither is tuned on this bank; the verdicts use the default.
    variants = (
        []
        if args.keep is not None
        else [("DeepConf-low, η=0.1", config.model_copy(update={"keep": 0.1}))]
    )
    rows = asyncio.run(evaluate(bank, config, variants=variants))
    body = render(rows, config, args.bank, n)
    print(body)
    if args.docs:
        flags = "".join(f" --{k} {v}" for k, v in overrides.items())
        write_section(SECTION, body, f"python -m benchmarks.deepconf --bank {args.bank}{flags}")


if __name__ == "__main__":
    main()
