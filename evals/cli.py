"""`eval` and `sweep` sub-commands; the main CLI mounts ``eval_app`` and ``sweep_app``.

Importing this module builds the Typer apps and nothing else (no network, no worker pools).
"""

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markdown import Markdown

from evals.datasets import DatasetError, ProblemFilter, dataset_label, load_dataset
from evals.metrics import ProblemOutcome, compare_runs, summarize
from evals.plots import plot_run
from evals.presets import SAMPLING_PRESETS, PromptPresetName, SamplingPresetName
from evals.records import RunStore, SampleRecord
from evals.report import (
    RunReport,
    ServingInfo,
    collect_environment,
    comparison_markdown,
    now_iso,
    write_report,
)
from evals.runner import EvalError, EvalRunner, GenerationConfig, RunSettings
from evals.scoring import AnswerEquivalence, build_outcomes
from evals.sweep import load_sweep_spec, run_live_sweep, run_simulated_sweep, write_sweep_outputs

__all__ = ["eval_app", "sweep_app"]

eval_app = typer.Typer(help="Evaluate the service on MATH-500 / AIME / GSM8K or a JSONL file.")
sweep_app = typer.Typer(help="Sweep `tts` configs and report the accuracy / cost Pareto front.")


@eval_app.callback()
def _eval_group() -> None:
    """Evaluate the service on MATH-500 / AIME / GSM8K or a JSONL file."""


@sweep_app.callback()
def _sweep_group() -> None:
    """Sweep `tts` configs and report the accuracy / cost Pareto front."""


def _json_option(text: str | None, *, name: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint=name) from exc
    if not isinstance(value, dict):
        raise typer.BadParameter("must be a JSON object", param_hint=name)
    return value


async def _outcomes_with_grader_pool(records: list[SampleRecord]) -> list[ProblemOutcome]:
    from verifiers.equivalence import EquivalenceChecker

    with EquivalenceChecker() as checker:
        return await build_outcomes(records, checker=checker)


def _serving(
    records: list[SampleRecord], meta: dict[str, Any], *, engine: str | None, quant: str | None
) -> ServingInfo:
    models = Counter(r.model for r in records if r.model)
    reported = models.most_common(1)[0][0] if models else meta.get("config", {}).get("model")
    return ServingInfo(engine=engine, model=reported, quantization=quant, server=meta.get("server"))


def _finish(
    records: list[SampleRecord],
    outcomes: list[ProblemOutcome],
    *,
    run_path: Path,
    meta: dict[str, Any],
    selection: dict[str, Any],
    engine: str | None,
    quantization: str | None,
    seed: int,
    console: Console,
) -> None:
    if not outcomes:
        console.print("[yellow]no finished samples to report[/yellow]")
        return
    metrics = summarize(outcomes, seed=seed)
    config = meta.get("config", {})
    dataset = dataset_label(str(config.get("dataset", run_path.stem)))
    report = RunReport(
        title=f"{dataset} · {run_path.stem}",
        created_at=now_iso(),
        dataset=dataset,
        config_hash=meta.get("config_hash"),
        config=config,
        selection=selection,
        serving=_serving(records, meta, engine=engine, quant=quantization),
        environment=collect_environment(),
        metrics=metrics,
        run_file=str(run_path),
    )
    stem = run_path.with_suffix("")
    markdown, payload = write_report(report, stem)
    latencies = [r.latency_s for r in records if r.latency_s is not None and r.error is None]
    plot = plot_run(metrics, latencies, stem.with_name(stem.name + ".png"), title=report.title)
    console.print(Markdown(markdown.read_text(encoding="utf-8").split("## Setup")[0]))
    console.print(f"report: {markdown}\njson:   {payload}\nplot:   {plot}")


def _read_meta(run_path: Path) -> dict[str, Any]:
    meta_path = run_path.with_name(run_path.stem + ".meta.json")
    if not meta_path.exists():
        return {}
    loaded: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    return loaded


@eval_app.command("run")
def run_eval(
    dataset: Annotated[
        str, typer.Argument(help="math500, aime24, aime25, gsm8k or a .jsonl path.")
    ],
    limit: Annotated[int | None, typer.Option(help="First N problems after filters.")] = None,
    slice_: Annotated[
        str | None, typer.Option("--slice", help="start:stop after filters, e.g. 0:20.")
    ] = None,
    level: Annotated[list[int] | None, typer.Option(help="Keep this level (repeatable).")] = None,
    subject: Annotated[list[str] | None, typer.Option(help="Keep this subject.")] = None,
    n: Annotated[int, typer.Option(min=1, help="Samples per problem.")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 4,
    base_url: Annotated[str, typer.Option(help="Server root URL.")] = "http://127.0.0.1:8000",
    model: Annotated[str, typer.Option(help="`model` field of the requests.")] = "default",
    tts: Annotated[str | None, typer.Option(help="`tts` block as JSON.")] = None,
    extra_body: Annotated[
        str | None, typer.Option(help='Other body fields as JSON, e.g. {"reasoning_effort":"low"}.')
    ] = None,
    sampling: Annotated[SamplingPresetName, typer.Option()] = SamplingPresetName.REASONING,
    max_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed; sample i gets seed + i.")] = None,
    prompt: Annotated[PromptPresetName, typer.Option()] = PromptPresetName.BOXED,
    stream: Annotated[bool, typer.Option(help="Stream (measures TTFT).")] = True,
    out: Annotated[Path, typer.Option(help="Directory for run files and reports.")] = Path("runs"),
    engine: Annotated[str | None, typer.Option(help="Engine label for the report.")] = None,
    quantization: Annotated[str | None, typer.Option(help="Quantisation label.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Bearer token.")] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    bootstrap_seed: Annotated[int, typer.Option(help="Seed of bootstrap intervals.")] = 0,
) -> None:
    """Run a dataset through the API; rerunning the same command resumes an interrupted run."""
    from verifiers.grading import Grader

    console = Console()
    try:
        selection: dict[str, Any] = {"levels": tuple(level or ()), "subjects": tuple(subject or ())}
        if slice_ is not None:
            problem_filter = ProblemFilter.from_slice(slice_, **selection)
        else:
            problem_filter = ProblemFilter(**selection, limit=limit)
        problems = problem_filter.apply(load_dataset(dataset))
    except DatasetError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not problems:
        raise typer.BadParameter("the filters select no problems")
    sampling_preset = SAMPLING_PRESETS[sampling].model_copy(
        update={"max_tokens": max_tokens, "seed": seed}
    )
    config = GenerationConfig(
        dataset=dataset,
        model=model,
        n=n,
        prompt=prompt,
        sampling=sampling_preset,
        tts=_json_option(tts, name="--tts"),
        extra_body=_json_option(extra_body, name="--extra-body") or {},
        stream=stream,
    )
    settings = RunSettings(base_url=base_url, api_key=api_key, concurrency=concurrency, out_dir=out)

    async def main() -> None:
        async with Grader() as grader:
            runner = EvalRunner(config, settings, grader=grader, console=console)
            console.print(f"run file: {runner.run_path} ({len(problems)} problems x {n})")
            result = await runner.run(problems, show_progress=progress)
            if result.reused:
                console.print(f"resumed: {result.reused} samples reused from {result.run_path}")
            checker: AnswerEquivalence = grader.checker
            outcomes = await build_outcomes(result.records, checker=checker)
        _finish(
            result.records,
            outcomes,
            run_path=result.run_path,
            meta=_read_meta(result.run_path),
            selection=problem_filter.model_dump(mode="json"),
            engine=engine,
            quantization=quantization,
            seed=bootstrap_seed,
            console=console,
        )

    try:
        asyncio.run(main())
    except EvalError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; rerun the same command to resume[/yellow]")
        raise typer.Exit(130) from None


@eval_app.command("report")
def report_run(
    run_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    engine: Annotated[str | None, typer.Option()] = None,
    quantization: Annotated[str | None, typer.Option()] = None,
    bootstrap_seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Recompute metrics, report and plot from a (possibly partial) run file."""
    records = [r for r in RunStore(run_file).load() if r.error is None]
    outcomes = asyncio.run(_outcomes_with_grader_pool(records))
    _finish(
        records,
        outcomes,
        run_path=run_file,
        meta=_read_meta(run_file),
        selection={"all finished samples in": str(run_file)},
        engine=engine,
        quantization=quantization,
        seed=bootstrap_seed,
        console=Console(),
    )


@eval_app.command("compare")
def compare(
    run_a: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    run_b: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    bootstrap_seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Paired accuracy difference of two runs on the problems both contain."""

    async def outcomes(path: Path) -> list[ProblemOutcome]:
        return await build_outcomes([r for r in RunStore(path).load() if r.error is None])

    try:
        comparison = compare_runs(
            asyncio.run(outcomes(run_a)), asyncio.run(outcomes(run_b)), seed=bootstrap_seed
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    Console().print(Markdown(comparison_markdown(comparison, name_a=run_a.stem, name_b=run_b.stem)))


@sweep_app.command("run")
def run_sweep(
    grid: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Grid YAML file.")],
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Replay recorded traces; no server needed.")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Output directory.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars (live).")] = True,
) -> None:
    """One run per grid point, then pareto.md / pareto.csv / pareto.png / sweep.json."""
    console = Console()
    try:
        spec = load_sweep_spec(grid)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    out_dir = out or Path("runs") / f"sweep-{spec.name}{'-simulated' if simulate else ''}"

    async def live() -> Any:
        from verifiers.grading import Grader

        async with Grader() as grader:
            return await run_live_sweep(
                spec,
                grader=grader,
                checker=grader.checker,
                runs_dir=out_dir / "runs",
                show_progress=progress,
            )

    facts: dict[str, Any] = {}
    try:
        if simulate:
            rows, facts = asyncio.run(run_simulated_sweep(spec))
        else:
            rows = asyncio.run(live())
    except (ValueError, EvalError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    meta = {
        "spec": spec.model_dump(mode="json"),
        "simulated": simulate,
        "simulation": facts or None,
        "environment": collect_environment().model_dump(mode="json"),
        "created_at": now_iso(),
    }
    title = f"{spec.name}{' (simulated)' if simulate else ''}: {len(rows)} points"
    note = (
        f"Simulated over {facts['problems']} problems (group sizes {facts['group_sizes']}; "
        f"{facts['problems_left_out']} left out: fewer samples than the largest N). "
        f"Tokens counted by {facts['tokenizer']}; latency from profile `{facts['profile']}`, "
        f"pool `{facts['pool']}`. Command: `tts-orchestrator sweep run {grid} --simulate`."
        if facts
        else ""
    )
    paths = write_sweep_outputs(rows, out_dir, title=title, meta=meta, note=note)
    console.print(paths["markdown"].read_text(encoding="utf-8"), markup=False, highlight=False)
    console.print("\n".join(f"{k}: {v}" for k, v in paths.items()))


@sweep_app.command("policy")
def policy_experiment(
    traces: Annotated[list[Path], typer.Option("--traces", help="Bank files (JSONL).")],
    profile: Annotated[str, typer.Option(help="Profile name or ProfileSet JSON path.")] = "cpu",
    budgets: Annotated[
        list[float] | None, typer.Option("--budget", help="Latency budgets (s), repeatable.")
    ] = None,
    n_branches: Annotated[
        list[int] | None, typer.Option("--n", help="N grid (repeatable; default 1 2 4 8).")
    ] = None,
    thinking_budget: Annotated[
        list[int] | None, typer.Option(help="Thinking-budget grid besides unlimited.")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Requests per problem.")] = 1,
    relative: Annotated[
        bool, typer.Option(help="Budgets are multiples of the fastest fixed config's latency.")
    ] = False,
    include_incomplete: Annotated[bool, typer.Option(help="Also cut-off traces.")] = False,
    out: Annotated[Path | None, typer.Option(help="Output directory.")] = None,
    label: Annotated[str | None, typer.Option(help="Profile name shown in the report.")] = None,
) -> None:
    """The planner vs every fixed (pool, N, thinking budget) per latency budget, simulated on a
    bank: policy.md (table + computed verdict), policy.png, policy.json."""
    from evals.policy_lab import (
        PolicyReport,
        plot_policy,
        policy_markdown,
        run_policy_experiment,
    )
    from evals.simulation import SimulationLab

    if not budgets:
        raise typer.BadParameter("give at least one --budget", param_hint="--budget")
    grid_n = tuple(n_branches or (1, 2, 4, 8))
    grid_budgets = (*(thinking_budget or ()), None)

    async def run() -> PolicyReport:
        async with SimulationLab(traces, complete_only=not include_incomplete) as lab:
            return await run_policy_experiment(
                lab,
                profile=profile,
                budgets_s=budgets,
                n_branches=grid_n,
                thinking_budgets=grid_budgets,
                samples=samples,
                relative=relative,
            )

    try:
        report = asyncio.run(run())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if label:
        report = report.model_copy(update={"profile": label})
    out_dir = out or Path("runs") / f"policy-{report.profile}"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = " ".join(
        [
            *(f"--traces {t}" for t in traces),
            f"--profile {report.profile}",
            *(f"--budget {b:g}" for b in budgets),
            *(f"--n {n}" for n in grid_n),
            *(f"--thinking-budget {b}" for b in thinking_budget or ()),
            f"--samples {samples}",
            *(["--relative"] if relative else []),
            *(["--include-incomplete"] if include_incomplete else []),
        ]
    )
    markdown = policy_markdown(report, command=f"tts-orchestrator sweep policy {args}")
    (out_dir / "policy.md").write_text(markdown, encoding="utf-8")
    (out_dir / "policy.json").write_text(report.model_dump_json(indent=2) + "\n", "utf-8")
    plot_policy(report, out_dir / "policy.png")
    Console().print(Markdown(markdown))
