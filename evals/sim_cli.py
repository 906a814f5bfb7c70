"""`tts-orchestrator simulate`: one `tts` config over banks of recorded traces."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from tts_orchestrator.protocol import TtsOptions

__all__ = ["simulate_command"]

EarlyStopName = Literal["none", "unanimous_window", "beta"]


def simulate_command(
    traces: Annotated[
        list[Path], typer.Option("--traces", help="Trace files / sample banks (JSONL).")
    ],
    n_branches: Annotated[
        int | None, typer.Option(min=1, help="Branches per request (default 1).")
    ] = None,
    latency_budget: Annotated[
        float | None,
        typer.Option(help="Seconds; without --n-branches the service's planner chooses."),
    ] = None,
    trim: Annotated[bool, typer.Option(help="TrimR trimming (the rule judge).")] = False,
    early_stop: Annotated[str, typer.Option(help="none | unanimous_window | beta.")] = "none",
    early_stop_window: Annotated[int, typer.Option(min=1)] = 3,
    early_stop_threshold: Annotated[float, typer.Option()] = 0.95,
    aggregation: Annotated[str, typer.Option(help="majority | first_finish.")] = "majority",
    thinking_budget: Annotated[int | None, typer.Option(min=1, help="Thinking tokens.")] = None,
    profile: Annotated[str, typer.Option(help="Profile name or ProfileSet JSON path.")] = "cpu",
    pool: Annotated[str | None, typer.Option(help="Pool of the profile (default: first).")] = None,
    samples: Annotated[int, typer.Option(min=1, help="Requests per problem.")] = 1,
    seed: Annotated[int, typer.Option(help="Seeds the branch draw.")] = 0,
    delay_tokens: Annotated[int, typer.Option(help="Verdict latency, streamed tokens.")] = 0,
    datasets: Annotated[list[str] | None, typer.Option(help="Keep only these datasets.")] = None,
    include_incomplete: Annotated[bool, typer.Option(help="Also cut-off traces.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    per_request: Annotated[bool, typer.Option(help="With --json: every request too.")] = False,
) -> None:
    """Simulate requests over recorded traces with the service's own trimming, votes and
    early-stop rules, timed by a pool profile; accuracy is graded after every decision."""
    from evals.simulation import SimulationLab, SimulationModel, SimulationResult

    try:
        tts = TtsOptions.model_validate(
            {
                "n_branches": n_branches,
                "latency_budget_s": latency_budget,
                "trim": trim,
                "early_stop": early_stop,
                "early_stop_window": early_stop_window,
                "early_stop_threshold": early_stop_threshold,
                "aggregation": aggregation,
                "thinking_budget": thinking_budget,
                "pool": pool,
            }
        )
        model = SimulationModel(profile=profile, pool=pool, samples=samples, seed=seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc

    async def run() -> SimulationResult:
        async with SimulationLab(
            traces,
            datasets=datasets,
            complete_only=not include_incomplete,
            verdict_delay_tokens=delay_tokens,
        ) as lab:
            return await lab.run(tts, model)

    try:
        result = asyncio.run(run())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if as_json:
        exclude = None if per_request else {"requests"}
        typer.echo(json.dumps(result.model_dump(mode="json", exclude=exclude), indent=2))
        return
    branches = "planned" if n_branches is None and latency_budget else str(n_branches or 1)
    table = Table(title=f"simulated {branches} branch(es) over {result.problems} problems")
    for column in ("accuracy", "mean latency (s)", "thinking tokens", "trim saved", "groups"):
        table.add_column(column)
    table.add_row(
        f"{100 * result.accuracy:.1f}%",
        f"{result.mean_latency_s:.2f}",
        str(result.thinking_tokens),
        f"{100 * result.trim_saved_fraction:.1f}%",
        ", ".join(f"{n} of size {size}" for size, n in result.group_sizes.items()),
    )
    console = Console()
    console.print(table)
    console.print(
        f"tokenizer: {result.tokenizer}; profile {result.profile}, pool {result.pool}; "
        f"{result.problems_left_out} problem(s) left out (group smaller than N)"
    )
