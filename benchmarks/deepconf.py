"""DeepConf offline on a recorded sample bank (issue 17): confidence early stop vs majority@N
and the confidence-weighted vote vs majority, each problem replayed as one request through the
service's own presenter, vote and DeepConf gate (see `evals.confidence_replay`).

Run: `python -m benchmarks.deepconf --bank evals/data/deepconf/<bank>.jsonl` (add
`--no-docs` to print only). The targets (≥ 30% fewer tokens at ≥ −1 pt accuracy; weighted ≥
majority) are checked by the command, never typed. Settings are chosen by 2-fold
cross-validation (`evals.confidence_selection`); its pooled held-out rows are the estimate.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from pathlib import Path

from evals.confidence_replay import (
    BankSample,
    Method,
    Summary,
    deepconf_methods,
    evaluate,
    load_bank,
)
from evals.confidence_selection import (
    FIXED,
    GRID,
    FoldResult,
    GridRun,
    cross_validate,
    grid_configs,
    held_out_rows,
    run_grid,
    vote_key,
)
from evals.docs import write_section
from tts_orchestrator.config.pools import LaunchSpec
from verifiers.confidence import ConfidenceConfig, ConfidenceVote
from verifiers.equivalence import EquivalenceChecker

SECTION = "DeepConf: confidence early stop and weighted vote (issue 17)"
TOKENS_SAVED_TARGET = 0.30
ACCURACY_SLACK_PT = 1.0
#: The slots of a default llama.cpp pool (`deploy/configs/cpu-default.yaml` too).
POOL_SLOTS = LaunchSpec.model_fields["n_parallel"].default
POOL = f"a pool of {POOL_SLOTS} slots (the default llama.cpp pool; the bank's server)"


def at_once(n: int) -> str:
    return f"all {n} branches at once"


def _table(rows: list[Summary], base: Summary) -> str:
    lines = [
        "| method | problems | accuracy | tokens | vs majority@N | pruned | stopped early "
        "| latency (decode steps) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        saved = 1 - r.tokens / base.tokens if base.tokens else 0.0
        delta = 0.0 + 100 * (r.accuracy - base.accuracy)  # 0.0 +: no "-0.0"
        latency = r.steps / base.steps if base.steps else 0.0
        lines.append(
            f"| {r.name} | {r.problems} | {100 * r.accuracy:.1f}% | {r.tokens:,} | "
            f"{0.0 - 100 * saved:+.1f}% tokens, {delta:+.1f} pt | "
            f"{r.pruned} | {r.stopped} | {r.steps / max(1, r.problems):.0f} ({latency:.2f}×) |"
        )
    return "\n".join(lines)


def _figures(rows: list[Summary]) -> tuple[float, float, float]:
    """(tokens saved by early stop, its accuracy delta in pt, the weighted vote's delta)."""
    by = {r.name: r for r in rows}
    base, weighted, stop = (
        by["majority@N"],
        by["confidence-weighted@N"],
        by["confidence early stop"],
    )
    saved = 1 - stop.tokens / base.tokens if base.tokens else 0.0
    return saved, 100 * (stop.accuracy - base.accuracy), 100 * (weighted.accuracy - base.accuracy)


def targets_met(rows: list[Summary]) -> tuple[bool, bool]:
    """(early stop ≥ 30% fewer tokens at ≥ −1 pt, weighted vote ≥ majority)."""
    saved, delta, w = _figures(rows)
    return saved >= TOKENS_SAVED_TARGET and delta >= -ACCURACY_SLACK_PT, w >= 0


def verdicts(rows: list[Summary], *, label: str) -> list[str]:
    saved, delta, w = _figures(rows)
    stop_met, _ = targets_met(rows)
    out = [
        f"- {label}: early stop {100 * saved:.1f}% fewer tokens at {delta:+.1f} pt accuracy: "
        f"target (≥ {100 * TOKENS_SAVED_TARGET:.0f}% at ≥ −{ACCURACY_SLACK_PT:.0f} pt) "
        f"**{'met' if stop_met else 'not met'}**."
    ]
    verdict = "met" if w > 0 else ("met (a tie)" if w == 0 else "not met")
    out.append(f"- {label}: confidence-weighted vote vs majority: {w:+.1f} pt: **{verdict}**.")
    return out


Bank = dict[str, list[BankSample]]


def scaled_config(bank: Bank, *, span: float = 1 / 8, **overrides: object) -> ConfidenceConfig:
    """DeepConf's settings scaled to the bank's answers. DeepConf's 2048-token window (and
    tail) is about an eighth of its traces; the same ``span`` of this bank's median sample
    length keeps its meaning here. Only lengths are read (never an answer or its grade)."""
    lengths = sorted(s.tokens for samples in bank.values() for s in samples)
    median = lengths[len(lengths) // 2] if lengths else 256
    window = max(8, round(median * span))
    return ConfidenceConfig.model_validate({"window": window, "tail": window, **overrides})


#: Reference settings shown next to the service's defaults (never chosen from here): DeepConf
#: with one η for the threshold and the vote, as the paper runs it, and the service's defaults
#: before η was split, with and without the warm-up first.
REFERENCES: dict[str, dict[str, object]] = {
    "defaults, warmup_first: false": {"warmup_first": False},
    "DeepConf-online, one η=0.1, threshold vote": {
        "keep": 0.1,
        "prune_keep": 0.1,
        "vote": ConfidenceVote.THRESHOLD,
    },
    "DeepConf-low, one η=0.1, all started at once": {
        "keep": 0.1,
        "prune_keep": 0.1,
        "warmup_first": False,
    },
    "pre-split defaults, one η=0.9, all started at once": {
        "keep": 0.9,
        "prune_keep": 0.9,
        "warmup_first": False,
    },
}


async def measure(bank: Bank, config: ConfidenceConfig, n: int, slots: int | None) -> list[Summary]:
    """The defaults' rows, then each reference's (its weighted vote only where the vote's own
    settings differ from the defaults': otherwise the row would repeat the defaults')."""
    methods = list(deepconf_methods(config, n=n))
    for label, update in REFERENCES.items():
        ref = config.model_copy(update=update)
        methods += [
            Method(f"{m.name} ({label})", m.tts, confidence=ref)
            for m in deepconf_methods(ref, n=n)
            if m.confidence is not None
            and (m.tts.early_stop == "confidence" or vote_key(ref) != vote_key(config))
        ]
    with EquivalenceChecker() as checker:
        return await evaluate(bank, methods, equivalent=checker.equivalent, slots=slots)


def _settings(config: ConfidenceConfig, *, window: bool = True) -> str:
    skip = {"top_logprobs"} | (set() if window else {"window", "tail"})  # k is the bank's
    used = config.model_dump(mode="json", exclude=skip)
    return ", ".join(f"{k}={v}" for k, v in used.items())


def _differences(chosen: ConfidenceConfig, defaults: ConfidenceConfig) -> list[str]:
    """Where a choice differs from the defaults, the window and tail aside (a share of the
    bank's lengths, not a default)."""
    skip = {"window", "tail", "top_logprobs"}
    a, b = (
        chosen.model_dump(mode="json", exclude=skip),
        defaults.model_dump(mode="json", exclude=skip),
    )
    return [f"{k}: {a[k]} chosen, {b[k]} by default" for k in a if a[k] != b[k]]


def _same_choice(a: ConfidenceConfig, b: ConfidenceConfig) -> bool:
    return not _differences(a, b)


@dataclass(frozen=True)
class CrossValidation:
    grid: GridRun
    folds: list[FoldResult]
    #: Each fold's choice replayed with all N branches at once, on its held-out problems.
    at_once: GridRun

    @property
    def stable(self) -> bool:
        chosen = [f.chosen for f in self.folds]
        return chosen[0] is not None and len(set(chosen)) == 1

    def choice(self) -> ConfidenceConfig | None:
        index = self.folds[0].chosen
        return self.grid.configs[index] if self.stable and index is not None else None


async def cross_validate_bank(bank: Bank, base: ConfidenceConfig, n: int) -> CrossValidation:
    with EquivalenceChecker() as checker:
        grid = await run_grid(
            bank, grid_configs(base), n=n, slots=POOL_SLOTS, equivalent=checker.equivalent
        )
        results = cross_validate(grid, slack_pt=ACCURACY_SLACK_PT)
        chosen = [grid.configs[f.chosen if f.chosen is not None else 0] for f in results]
        at_once = await run_grid(bank, chosen, n=n, slots=None, equivalent=checker.equivalent)
    return CrossValidation(grid, results, at_once)


Run = tuple[str, ConfidenceConfig, list[Summary]]


def _block(label: str, config: ConfidenceConfig | None, rows: list[Summary]) -> list[str]:
    base = next(r for r in rows if r.name == "majority@N")
    title = f"**{label}**" + (f" ({_settings(config)})" if config is not None else "")
    return ["", title, "", _table(rows, base), "", *verdicts(rows, label=label)]


def render_cv(cv: CrossValidation, pool: str, every: str) -> list[str]:
    grid = cv.grid
    parts = [
        "",
        "### Choosing the defaults: 2-fold cross-validation",
        "",
        "Protocol (`evals/confidence_selection.py`): problems sorted by id; fold 1 selects on "
        "the even positions and reports on the odd ones, fold 2 the reverse. Rule on the "
        "selection half: among the grid points whose early stop keeps accuracy ≥ majority@N − "
        f"{ACCURACY_SLACK_PT:.0f} pt and whose weighted vote is ≥ majority@N, the fewest "
        f"early-stop tokens, on {pool}. Grid ({len(grid.configs)} points): "
        + "; ".join(f"{k} ∈ {{{', '.join(_grid_value(v) for v in vs)}}}" for k, vs in GRID.items())
        + f"; window and tail {grid.configs[0].window} (an eighth of the median sample). "
        "Fixed at the defaults to keep the run short: "
        + "; ".join(f"{k} (not varied: {why})" for k, why in FIXED.items())
        + ".",
        "",
        "| fold | selected on | chosen | held-out: early stop | held-out: weighted vote |",
        "|---|---|---|---:|---:|",
    ]
    for k, f in enumerate(cv.folds, 1):
        index = f.chosen if f.chosen is not None else 0
        base, weighted, stop = grid.rows(index, f.held_out)
        chosen = (
            _settings(grid.configs[index], window=False)
            if f.chosen is not None
            else ("nothing fits: the old defaults")
        )
        parts.append(
            f"| {k} | {len(f.selected_on)} ({'even' if k == 1 else 'odd'}) | {chosen} | "
            f"{_delta(stop, base)} | {_delta(weighted, base)} |"
        )
    n_all = sum(len(f.held_out) for f in cv.folds)
    at_once_folds = [FoldResult(f.selected_on, f.held_out, k) for k, f in enumerate(cv.folds)]
    pooled = held_out_rows(grid, cv.folds)
    parts += _block(
        f"Cross-validated (pooled held-out, all {n_all} problems), {pool}", None, pooled
    )
    parts += _block(
        f"Cross-validated (pooled held-out, all {n_all} problems), {every}",
        None,
        held_out_rows(cv.at_once, at_once_folds),
    )
    estimate_met = all(targets_met(pooled))
    backed = cv.stable and estimate_met
    parts += [
        "",
        f"- Both folds chose the same setting: **{'yes' if cv.stable else 'no'}**.",
        f"- The cross-validated estimate ({pool}) meets both targets: "
        f"**{'yes' if estimate_met else 'no'}**.",
        f"- A setting backed as the service's default (both of the above): "
        f"**{'yes' if backed else 'no'}**"
        + "; either way the service's defaults stay DeepConf's published settings (never "
        "chosen from this bank).",
    ]
    parts += _repeated(grid, pool)
    choice = cv.choice()
    if choice is None or not backed:
        return parts
    parts += _block(
        f"The folds' common choice, all {n_all} problems, {pool} (in-sample: shown, not the "
        "estimate)",
        choice,
        grid.rows(grid.configs.index(choice), sorted(grid.majority)),
    )
    differ = _differences(choice, ConfidenceConfig())
    parts.append(
        "- The service's defaults (`ConfidenceConfig`, window and tail aside) are this choice: "
        + (
            f"**no** ({'; '.join(differ)})."
            if differ
            else "**yes** (chosen independently of them: the defaults are DeepConf's)."
        )
    )
    return parts


#: Seeds of the repeated cross-validation (a robustness check, not the decision rule).
REPEATS = range(10)


def _repeated(grid: GridRun, pool: str) -> list[str]:
    """The same rule over random 2-fold splits of the same problems: how often the folds agree,
    what each fold chose, and how the pooled held-out estimate varies with the split."""
    chosen: list[ConfidenceConfig] = []
    agree = met = 0
    saved, weighted = [], []
    for seed in REPEATS:
        results = cross_validate(grid, slack_pt=ACCURACY_SLACK_PT, seed=seed)
        picks = [f.chosen if f.chosen is not None else 0 for f in results]
        chosen += [grid.configs[i] for i in picks]
        agree += results[0].chosen is not None and len(set(picks)) == 1
        rows = held_out_rows(grid, results)
        met += all(targets_met(rows))
        s, _, w = _figures(rows)
        saved.append(100 * s)
        weighted.append(w)
    counts = "; ".join(
        f"{k}: "
        + ", ".join(
            f"{_grid_value(v)} ×{n}"
            for v in values
            if (n := sum(getattr(c, k) == v for c in chosen))
        )
        for k, values in GRID.items()
    )
    return [
        "",
        f"Robustness check (added after the protocol above gave its answer; not the decision "
        f"rule): the same rule over {len(REPEATS)} random 2-fold splits (seeds "
        f"{REPEATS.start}–{REPEATS.stop - 1}), {pool}. The two folds chose the same setting in "
        f"{agree} of {len(REPEATS)} splits; the pooled held-out estimate saved "
        f"{min(saved):.1f}–{max(saved):.1f}% tokens with a weighted vote "
        f"{min(weighted):+.1f} to {max(weighted):+.1f} pt, meeting both targets in {met} of "
        f"{len(REPEATS)}. Choices over the {len(chosen)} folds: {counts}.",
    ]


def _grid_value(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)


def _delta(row: Summary, base: Summary) -> str:
    saved = 1 - row.tokens / base.tokens if base.tokens else 0.0
    delta = 0.0 + 100 * (row.accuracy - base.accuracy)
    return f"{0.0 - 100 * saved:+.1f}% tokens, {delta:+.1f} pt"


LATE_START = "confidence early stop (defaults, warmup_first: false)"


def latency_note(runs: list[Run]) -> list[str]:
    """What the warm-up first costs in latency (decode steps vs majority@N's) on each pool."""
    ratios = []
    for label, _, rows in runs:
        by = {r.name: r for r in rows}
        base, first, late = by["majority@N"], by["confidence early stop"], by.get(LATE_START)
        if late is None or not base.steps:
            continue
        where = label.rsplit(", ", 1)[-1] if ", " in label else label
        ratios.append(
            f"{first.steps / base.steps:.2f}× majority's decode steps with warmup_first "
            f"(default), {late.steps / base.steps:.2f}× without, on {where}"
        )
    if not ratios:
        return []
    return [
        "",
        "- Latency of the defaults' early stop: " + "; ".join(ratios) + ". A pool with a slot "
        "for every branch pays for the warm-up first in latency; a user there who prefers "
        "latency sets `warmup_first: false` (it prunes less: its row above).",
    ]


def render(runs: list[Run], cv: CrossValidation | None, bank: Path, n: int) -> str:
    parts = [
        f"Bank: `{bank}` (N = {n} samples per problem; see `evals/data/deepconf/README.md`).",
        "Window and tail are an eighth of the bank's median sample length (DeepConf's 2048 is "
        "about an eighth of its traces); the other settings are the service's defaults "
        "(`ConfidenceConfig`): DeepConf's published settings, not tuned on this bank — the "
        "pruning threshold at the warm-up's 90th percentile (`prune_keep` 0.1: the paper's "
        "DeepConf-low, `CONFIDENCE_PERCENTILE = 90` in its reference `deepconf-online.py`), "
        "the warm-up before the other branches (`warmup_first`: the reference's order), the "
        "top-90% vote (`keep` 0.9: the paper's DeepConf-high filter; the reference's online "
        "run votes with the threshold instead, its row below), the paper's τ 0.95, lowest "
        "group confidence; `warmup` 3 is the service's (the reference warms up on 16 of 256 "
        "traces). DeepConf has one η for the threshold and the vote; "
        "the service split it into `prune_keep` and `keep` after the first results here (one "
        "η: a low η saved tokens in the threshold and cost accuracy in the vote), so the "
        "defaults' rows below are not blind to this bank. Rows in parentheses are reference "
        "settings, shown, not chosen: DeepConf with one η as the paper runs it, and the "
        "service's pre-split defaults.",
    ]
    for label, config, rows in runs:
        parts += _block(label, config, rows)
    parts += latency_note(runs)
    if cv is not None:
        choice = cv.choice()
        if choice is not None and _same_choice(choice, ConfidenceConfig()):
            parts += [
                "",
                "Note: the service's defaults are the setting the cross-validation below chose "
                "on this bank, so the all-problem rows above are in-sample for them; the "
                "cross-validated rows are the estimate.",
            ]
        parts += render_cv(cv, POOL, at_once(n))
    parts += [
        "",
        "Each problem is one request replayed through the service's own `VotingPresenter`, "
        "`BranchConfidence` gate and equivalence check, token by token with the recorded "
        "confidences (running branches decode one token per step: equal rates; latency is the "
        "mean number of such steps a request took, and its ratio to majority@N's). Tokens are "
        "those generated before a branch finished, was pruned or was stopped; a branch still "
        "queued for a slot, or waiting for the warm-up (warmup_first), when the request stops "
        "generated none. Correctness only grades, and selects on a fold's selection half; it "
        "never steers a request.",
    ]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bank", type=Path, required=True)
    ap.add_argument(
        "--select",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also choose settings by 2-fold cross-validation (evals/confidence_selection.py).",
    )
    ap.add_argument("--docs", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    bank = load_bank(args.bank)
    n = max((len(s) for s in bank.values()), default=0)
    bank = {k: v for k, v in bank.items() if len(v) == n}  # complete problems only
    config = scaled_config(bank)
    runs: list[Run] = [
        (
            f"Service defaults, all {len(bank)} problems, {label}",
            config,
            asyncio.run(measure(bank, config, n, slots)),
        )
        for label, slots in ((POOL, POOL_SLOTS), (at_once(n), None))
    ]
    cv = asyncio.run(cross_validate_bank(bank, config, n)) if args.select else None
    body = render(runs, cv, args.bank, n)
    print(body)
    if args.docs:
        flags = "" if args.select else " --no-select"
        write_section(SECTION, body, f"python -m benchmarks.deepconf --bank {args.bank}{flags}")


if __name__ == "__main__":
    main()
