"""`tts-orchestrator router fit | fit-levels | evaluate | decide`: the fast / slow router.

``fit`` learns the stage-1 model from eval runs (the JSONL files `evals` writes, each next to its
``.meta.json``): runs in fast mode and in slow mode over the same problems are paired, and a
problem *needs slow thinking* when its slow samples solved it (majority) and its fast ones did
not. ``fit-levels`` fits a proxy model from a dataset's difficulty levels (what shipped before
fast / slow outcomes existed). Both print the accuracy / token trade-off curve on held-out problems.

``evaluate`` runs auto against always-fast, always-slow and the oracle on recorded answers to the
same problems (``evals.pairs`` / ``evals.routing``); ``fit --pair`` fits auto on them. This
module only wires the commands: the logic lives in ``policies`` and ``evals``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from evals.pairs import TOKENS_NOTE, Ladder, PairDataError, load_ladder
from evals.records import RunStore, SampleRecord
from evals.routing import arm_rows, fit_on_ladders, verdict_line
from evals.routing import evaluate as evaluate_ladder
from policies.auto import AutoPolicy
from policies.features import extract_features
from policies.modes import EffortPolicy, ThinkingMode
from policies.router import (
    RouterExample,
    RouterModel,
    RouterThresholds,
    TradeoffReport,
    fit_router,
    tradeoff_report,
)
from tts_orchestrator.config.modes import ModesConfig
from tts_orchestrator.exceptions import ConfigError, RequestError
from tts_orchestrator.modes.resolution import ModeResolver, load_router
from verifiers.families import get_family

router_app = typer.Typer(
    help="Fast / slow thinking router: fit it from eval runs, inspect its decisions.",
    no_args_is_help=True,
)


class RouterDataError(ValueError):
    """Eval logs or problem files that cannot be turned into router examples."""


def sample_tokens(sample: SampleRecord) -> int:
    """Thinking + answer tokens of one eval sample."""
    return (sample.thinking_tokens or 0) + (sample.answer_tokens or 0)


class EvalRun(BaseModel):
    """One eval run file: its mode, dataset and successful samples."""

    path: Path
    mode: ThinkingMode
    dataset: str | None = Field(description="The run's dataset (name or JSONL path).")
    samples: list[SampleRecord]


def _meta_path(run: Path) -> Path:
    return run.with_name(run.name.removesuffix(".jsonl") + ".meta.json")


def mode_of_config(config: Mapping[str, Any], policy: EffortPolicy | None = None) -> ThinkingMode:
    """The mode an eval run asked for: ``tts.mode`` > ``enable_thinking`` > effort.

    Raises RouterDataError when the run asked for none (or for auto, which is not one mode).
    """
    tts = config.get("tts") or {}
    extra = config.get("extra_body") or {}
    flag = (extra.get("chat_template_kwargs") or {}).get("enable_thinking")
    if tts.get("mode"):
        mode = ThinkingMode(tts["mode"])
    elif isinstance(flag, bool):
        mode = ThinkingMode.SLOW if flag else ThinkingMode.FAST
    elif extra.get("reasoning_effort"):
        mode = (policy or EffortPolicy()).setting_for(extra["reasoning_effort"]).mode
    else:
        raise RouterDataError("the run sets no tts.mode, enable_thinking or reasoning_effort")
    if mode is ThinkingMode.AUTO:
        raise RouterDataError("an auto run mixes modes; fit from fast and slow runs")
    return mode


def load_run(path: Path, *, mode: ThinkingMode | None = None) -> EvalRun:
    """Read a run file and its meta file; ``mode`` overrides what the meta file says."""
    meta_file = _meta_path(path)
    config: dict[str, Any] = {}
    if meta_file.exists():
        config = json.loads(meta_file.read_text(encoding="utf-8")).get("config") or {}
    if mode is None:
        if not config:
            raise RouterDataError(f"{path}: no {meta_file.name} to tell its mode; pass --mode")
        try:
            mode = mode_of_config(config)
        except (RouterDataError, ValueError) as exc:
            raise RouterDataError(f"{path}: {exc}") from exc
    if not path.exists():
        raise RouterDataError(f"cannot read {path}: no such file")
    samples = [s for s in RunStore(path).load() if s.error is None]
    return EvalRun(path=path, mode=mode, dataset=config.get("dataset"), samples=samples)


def dataset_rows(path_or_name: str) -> list[dict[str, Any]]:
    """Rows of a problems JSONL file, or of a dataset packaged with ``evals``.

    A packaged dataset is read as a data file (``evals/data/<name>.jsonl``); no evals code runs.
    """
    path = Path(path_or_name)
    try:
        if path.suffix == ".jsonl" and path.exists():
            text = path.read_text(encoding="utf-8")
        else:
            folder = resources.files("evals.data")
            text = folder.joinpath(f"{path_or_name}.jsonl").read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError) as exc:
        raise RouterDataError(f"no problems file or packaged dataset {path_or_name!r}") from exc
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise RouterDataError(f"{path_or_name}: not JSONL: {exc}") from exc


def read_problems(path_or_name: str) -> dict[str, str]:
    """Problem id → text (see :func:`dataset_rows`)."""
    return {str(row["id"]): str(row["problem"]) for row in dataset_rows(path_or_name)}


def examples_from_runs(
    runs: Sequence[EvalRun], problems: Mapping[str, str]
) -> tuple[list[RouterExample], list[str]]:
    """Pair fast and slow samples per problem: (examples, problem ids in the same order).

    A problem counts as solved in a mode when at least half its samples were correct; its
    tokens are the mean over its samples. Problems seen in one mode only are skipped.
    """
    by_mode: dict[ThinkingMode, dict[str, list[SampleRecord]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for run in runs:
        for sample in run.samples:
            by_mode[run.mode][sample.problem_id].append(sample)
    fast, slow = by_mode[ThinkingMode.FAST], by_mode[ThinkingMode.SLOW]
    if not fast or not slow:
        raise RouterDataError("need at least one fast run and one slow run")
    ids = sorted(set(fast) & set(slow))
    missing = [i for i in ids if i not in problems]
    if missing:
        raise RouterDataError(f"{len(missing)} problems have no text, e.g. {missing[0]!r}")

    def solved(samples: list[SampleRecord]) -> bool:
        return 2 * sum(s.correct for s in samples) >= len(samples)

    def tokens(samples: list[SampleRecord]) -> float:
        return sum(sample_tokens(s) for s in samples) / len(samples)

    examples = [
        RouterExample(
            prompt=problems[i],
            solved_fast=solved(fast[i]),
            solved_slow=solved(slow[i]),
            tokens_fast=tokens(fast[i]),
            tokens_slow=tokens(slow[i]),
        )
        for i in ids
    ]
    return examples, ids


def examples_from_levels(
    rows: Iterable[Mapping[str, Any]], *, slow_from_level: int
) -> tuple[list[RouterExample], list[str]]:
    """Proxy examples: a problem of level >= ``slow_from_level`` needs slow thinking.

    Fast mode is taken to solve the others, slow mode all; tokens are relative (fast 0, slow 1),
    so the trade-off's token column is the share of problems routed to slow thinking.
    """
    examples, ids = [], []
    for row in rows:
        level = row.get("level")
        if not isinstance(level, int):
            continue
        examples.append(
            RouterExample(
                prompt=str(row["problem"]),
                solved_fast=level < slow_from_level,
                solved_slow=True,
                tokens_fast=0.0,
                tokens_slow=1.0,
            )
        )
        ids.append(str(row["id"]))
    if len(examples) < 2:
        raise RouterDataError("need at least two problems with a level")
    return examples, ids


def holdout_split(ids: Sequence[str], fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic split by a hash of the problem id: (train indices, held-out indices)."""
    train: list[int] = []
    held: list[int] = []
    for i, pid in enumerate(ids):
        bucket = int.from_bytes(hashlib.sha256(pid.encode()).digest()[:4], "big") / 2**32
        (held if bucket < fraction else train).append(i)
    return train, held


class FitResult(BaseModel):
    """A fitted router and its trade-off report."""

    model_config = ConfigDict(frozen=True)

    model: RouterModel = Field(description="Fitted on every example: the one to save.")
    report: TradeoffReport
    report_model: RouterModel = Field(description="The model the report routes with.")
    held_out: bool = Field(description="The report is on held-out problems.")


def fit_with_holdout(
    examples: Sequence[RouterExample],
    ids: Sequence[str],
    *,
    holdout: float,
    l2: float,
    max_accuracy_drop: float,
    uncertain_margin: float,
) -> FitResult:
    """Fit on all examples; report the curve of a model fitted without the held-out share
    (on the fitting data, flagged, when that share is empty)."""

    def fit(chosen: Sequence[RouterExample]) -> RouterModel:
        return fit_router(
            chosen, l2=l2, max_accuracy_drop=max_accuracy_drop, uncertain_margin=uncertain_margin
        )

    model = fit(examples)
    train, held = holdout_split(ids, holdout) if holdout > 0 else (list(range(len(ids))), [])
    if len(train) >= 2 and held:
        trial = fit([examples[i] for i in train])
        report = tradeoff_report(trial, [examples[i] for i in held])
        return FitResult(model=model, report=report, report_model=trial, held_out=True)
    report = tradeoff_report(model, examples)
    return FitResult(model=model, report=report, report_model=model, held_out=False)


def routed_index(report: TradeoffReport, model: RouterModel) -> int:
    """The curve point the model routes at: the first threshold at or above its slow cut."""
    cut = model.thresholds.slow_at_or_above
    return next(
        (i for i, p in enumerate(report.curve) if p.threshold >= cut), len(report.curve) - 1
    )


def tradeoff_table(
    report: TradeoffReport,
    model: RouterModel,
    *,
    title: str,
    show_tokens: bool = True,
    rows: int = 15,
) -> Table:
    """The trade-off curve (about ``rows`` points, always with the routed one) and its ends."""
    table = Table(title=title)
    names = ["slow if P ≥", "slow share", "accuracy", *(["mean tokens"] * show_tokens), ""]
    for name in names:
        table.add_column(name, justify="right" if name else "left")

    def add(label: str, share: float, accuracy: float, tokens: float, mark: str = "") -> None:
        cells = [label, f"{share:.0%}", f"{accuracy:.1%}"]
        table.add_row(*cells, *([f"{tokens:,.1f}"] * show_tokens), mark)

    add("all fast", 0.0, report.fast_accuracy, report.fast_mean_tokens)
    n = len(report.curve)
    routed = routed_index(report, model)
    shown = {round(k * (n - 1) / max(rows - 1, 1)) for k in range(min(rows, n))} | {routed}
    for i in sorted(shown):
        p = report.curve[i]
        mark = "← routed" if i == routed else ""
        add(f"{min(p.threshold, 1.0):.3f}", p.slow_fraction, p.accuracy, p.mean_tokens, mark)
    add("all slow", 1.0, report.slow_accuracy, report.slow_mean_tokens)
    return table


def _print_fit(console: Console, result: FitResult, *, show_tokens: bool = True) -> None:
    report = result.report
    where = (
        f"{report.examples} held-out problems"
        if result.held_out
        else "the fitting data (optimistic)"
    )
    console.print(
        tradeoff_table(
            report, result.report_model, title=f"trade-off on {where}", show_tokens=show_tokens
        )
    )
    t = result.model.thresholds
    console.print(
        f"saved model: fitted on {result.model.trained_on} problems; fast below "
        f"P={t.fast_below:.3f}, slow from P={t.slow_at_or_above:.3f}, uncertain in between"
    )


def _fail(console: Console, message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


HoldoutOpt = Annotated[
    float, typer.Option(min=0.0, max=0.9, help="Share of problems held out for the report.")
]
DropOpt = Annotated[
    float,
    typer.Option(min=0.0, max=1.0, help="Accuracy below all-slow that routing may cost."),
]
MarginOpt = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Width of the uncertain band below the slow cut.")
]
L2Opt = Annotated[float, typer.Option(min=0.0, help="L2 penalty of the logistic fit.")]
_CAP_HELP = "Auto's fast answer is the service's probe, cut here (modes.probe_max_tokens)."
ProbeCapOpt = Annotated[int | None, typer.Option(min=1, help=_CAP_HELP)]


def _ladder(console: Console, fast: Path, slow: Sequence[Path]) -> Ladder:
    ladder = load_ladder(fast, slow)
    if ladder.dropped:
        console.print(f"[yellow]{ladder.dropped} problems are not in every file: left out[/yellow]")
    return ladder


@router_app.command()
def evaluate(
    fast: Annotated[Path, typer.Option("--fast", help="Recorded fast answers (mip_* JSONL).")],
    slow: Annotated[
        list[Path],
        typer.Option(help="Recorded thinker answers, cheapest first; the last is always-slow."),
    ],
    model: Annotated[
        Path | None,
        typer.Option(help="A fitted auto policy (`router fit --fast`); unset: cross-validate."),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="Cross-validation folds, by problem.")] = 5,
    max_accuracy_drop: DropOpt = 0.005,
    l2: L2Opt = 1.0,
    probe_max_tokens: ProbeCapOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Auto vs always-fast, always-slow and the oracle on recorded answers to the same problems."""
    console = Console()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        ladder = _ladder(console, fast, slow)
        policy = AutoPolicy.model_validate_json(model.read_text("utf-8")) if model else None
        report = evaluate_ladder(
            ladder,
            policy=policy,
            folds=folds,
            max_accuracy_drop=max_accuracy_drop,
            l2=l2,
            tokens_note=TOKENS_NOTE,
            probe_max_tokens=probe_max_tokens,
        )
    except (PairDataError, ValueError, OSError) as exc:
        raise _fail(console, str(exc)) from None
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    how = f"{report.folds}-fold cross-validated by problem" if report.cross_validated else "given"
    table = Table(title=f"{report.problems} problems; auto {how}; {report.tokens_note}")
    for name in ("arm", "accuracy", "mean tokens", "tokens vs slow"):
        table.add_column(name, justify="left" if name == "arm" else "right")
    for row in arm_rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(f"decisions: {report.decisions.model_dump()}")
    console.print(verdict_line(report))


@router_app.command()
def fit(
    out: Annotated[Path, typer.Option("--out", help="Where to write the fitted model JSON.")],
    logs: Annotated[
        list[Path] | None,
        typer.Option("--logs", help="Eval run JSONL files (fast and slow runs)."),
    ] = None,
    pair: Annotated[
        list[str] | None,
        typer.Option(
            "--pair",
            help="Recorded answers FAST,SLOW[,SLOW2…] (cheapest first), one set of problems "
            "each; repeat for more sets. Fits auto (stage 1 + answer checks) on all of them.",
        ),
    ] = None,
    stage1_out: Annotated[
        Path | None,
        typer.Option(help="With --pair: also write the service's stage-1 model (router JSON)."),
    ] = None,
    problems: Annotated[
        str | None,
        typer.Option(help="Problems JSONL or packaged dataset [default: the runs' dataset]."),
    ] = None,
    holdout: HoldoutOpt = 0.2,
    max_accuracy_drop: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Accuracy below all-slow routing may cost [default: 0.02 for --logs, "
            "0.005 on the inner folds for --pair].",
        ),
    ] = None,
    uncertain_margin: MarginOpt = 0.1,
    folds: Annotated[int, typer.Option(min=2, help="With --pair: inner folds.")] = 5,
    l2: L2Opt = 1.0,
    probe_max_tokens: ProbeCapOpt = None,
) -> None:
    """Learn the router from eval runs (--logs: stage 1) or recorded pairs (--pair: auto)."""
    console = Console()
    if (logs is None) == (pair is None):
        raise _fail(console, "pass either --logs (eval runs) or --pair (recorded answers)")
    if pair is not None:
        _fit_pairs(
            console,
            pair,
            out=out,
            stage1_out=stage1_out,
            folds=folds,
            max_accuracy_drop=0.005 if max_accuracy_drop is None else max_accuracy_drop,
            l2=l2,
            probe_max_tokens=probe_max_tokens,
        )
        return
    try:
        runs = [load_run(path) for path in logs or []]
        source = problems or next((r.dataset for r in runs if r.dataset), None)
        if source is None:
            raise RouterDataError("the runs name no dataset; pass --problems")
        examples, ids = examples_from_runs(runs, read_problems(source))
        result = fit_with_holdout(
            examples,
            ids,
            holdout=holdout,
            l2=l2,
            max_accuracy_drop=0.02 if max_accuracy_drop is None else max_accuracy_drop,
            uncertain_margin=uncertain_margin,
        )
    except (RouterDataError, ValueError) as exc:
        raise _fail(console, str(exc)) from None
    needs = sum(e.needs_slow for e in examples)
    console.print(f"{len(examples)} problems in both modes; {needs} needed slow thinking")
    _print_fit(console, result)
    result.model.save(out)
    console.print(f"saved {out}")


def _fit_pairs(
    console: Console,
    pairs: Sequence[str],
    *,
    out: Path,
    stage1_out: Path | None,
    folds: int,
    max_accuracy_drop: float,
    l2: float,
    probe_max_tokens: int | None,
) -> None:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        ladders = []
        for spec in pairs:
            fast, *slow = [Path(part) for part in spec.split(",") if part]
            ladders.append(_ladder(console, fast, slow))
        policy = fit_on_ladders(
            ladders,
            folds=folds,
            max_accuracy_drop=max_accuracy_drop,
            l2=l2,
            probe_max_tokens=probe_max_tokens,
        )
    except (PairDataError, ValueError) as exc:
        raise _fail(console, str(exc)) from None
    out.write_text(policy.model_dump_json(indent=2) + "\n", encoding="utf-8")
    checks = ", ".join(f"{c.escalate_at:.3f}" for c in policy.checks)
    console.print(
        f"auto fitted on {policy.trained_on} problems ({' → '.join(policy.levels)}): straight to "
        f"the deepest from stage-1 P={policy.start_deepest_at:.3f}; escalate from P(wrong)="
        f"{checks} (thresholds on {folds} inner folds); saved {out}"
    )
    if stage1_out is not None:
        # The service's stage 1: the deepest from the fitted cut, every other request probed
        # (its stage 3 checks cheap answers before keeping them).
        cut = min(policy.start_deepest_at, 1.0)
        stage1 = policy.stage1.model_copy(
            update={"thresholds": RouterThresholds(fast_below=0.0, slow_at_or_above=cut)}
        )
        stage1.save(stage1_out)
        console.print(f"saved the service's stage-1 model {stage1_out}")


@router_app.command("fit-levels")
def fit_levels(
    out: Annotated[Path, typer.Option("--out", help="Where to write the router model JSON.")],
    problems: Annotated[
        str, typer.Option(help="Problems JSONL with levels, or a packaged dataset.")
    ] = "math500",
    slow_from_level: Annotated[
        int, typer.Option(min=1, help="Levels from this one count as needing slow thinking.")
    ] = 4,
    holdout: HoldoutOpt = 0.2,
    max_accuracy_drop: DropOpt = 0.1,
    uncertain_margin: MarginOpt = 0.1,
    l2: L2Opt = 1.0,
) -> None:
    """Fit a PROXY router from difficulty levels (when no fast / slow outcomes exist)."""
    console = Console()
    try:
        rows = dataset_rows(problems)
        examples, ids = examples_from_levels(rows, slow_from_level=slow_from_level)
        result = fit_with_holdout(
            examples,
            ids,
            holdout=holdout,
            l2=l2,
            max_accuracy_drop=max_accuracy_drop,
            uncertain_margin=uncertain_margin,
        )
    except (RouterDataError, ValueError) as exc:
        raise _fail(console, str(exc)) from None
    console.print(
        f"{len(examples)} problems; proxy label: level ≥ {slow_from_level} needs slow thinking"
    )
    _print_fit(console, result, show_tokens=False)
    result.model.save(out)
    console.print(f"saved {out}")


@router_app.command()
def decide(
    prompt: Annotated[str, typer.Argument(help="The prompt (a user turn) to route.")],
    model: Annotated[
        Path | None, typer.Option(help="Router model JSON [default: the shipped one].")
    ] = None,
    family: Annotated[str, typer.Option(help="Model family of the pool.")] = "generic",
    mode: Annotated[
        ThinkingMode, typer.Option(help="tts.mode of the request.")
    ] = ThinkingMode.AUTO,
    effort: Annotated[
        str | None, typer.Option(help="reasoning_effort (used when --mode is not given).")
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Feature contributions to show.")] = 8,
) -> None:
    """Print the mode decision for a prompt, with its reasons and the stage-1 features."""
    console = Console()
    try:
        router = load_router(model)
        resolver = ModeResolver(ModesConfig(), router=router)
        resolver.check_family(family)
        fam = get_family(family)
        chosen_mode = None if effort is not None else mode
        resolution = resolver.resolve(
            fam,
            messages=[{"role": "user", "content": prompt}],
            mode=chosen_mode,
            reasoning_effort=effort,
        )
    except (ConfigError, RequestError) as exc:
        raise _fail(console, exc.message) from None
    choice = resolution.choice
    console.print(f"[bold]mode:[/bold] {choice.mode.value}  (stage: {choice.stage.value})")
    console.print(f"[bold]reason:[/bold] {choice.reason}")
    if resolution.plan is not None:
        console.print(f"[bold]switch:[/bold] {resolution.plan.switch}")
    if choice.thinking_budget is not None:
        console.print(f"[bold]thinking budget:[/bold] {choice.thinking_budget} tokens")
    features = extract_features(prompt)
    contributions = router.contributions(features)
    table = Table(title=f"stage-1 features (P(needs slow) = {router.score(features):.3f})")
    for name in ("feature", "value", "logit contribution"):
        table.add_column(name, justify="left" if name == "feature" else "right")
    ranked = sorted(contributions.items(), key=lambda kv: -abs(kv[1]))[:top]
    for name, value in ranked:
        table.add_row(name, f"{features.values[name]:.3f}", f"{value:+.3f}")
    console.print(table)
