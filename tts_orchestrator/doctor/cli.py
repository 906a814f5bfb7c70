"""`tts-orchestrator doctor`: check a deployment and print one table (see `doctor.py`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tts_orchestrator.doctor.checks import (
    CheckStatus,
    DeploymentDoctor,
    DoctorOptions,
    DoctorReport,
)
from tts_orchestrator.exceptions import ConfigError

_STYLE = {
    CheckStatus.OK: "green",
    CheckStatus.WARN: "yellow",
    CheckStatus.FAIL: "bold red",
    CheckStatus.SKIP: "dim",
}


def render(report: DoctorReport) -> Table:
    table = Table(title="tts-orchestrator doctor", show_lines=False)
    for column in ("check", "target", "status", "ms", "detail"):
        table.add_column(column, overflow="fold", justify="right" if column == "ms" else "left")
    for r in report.results:
        table.add_row(
            r.check,
            r.target,
            f"[{_STYLE[r.status]}]{r.status.value}[/]",
            f"{r.latency_ms:.1f}" if r.latency_ms is not None else "",
            r.detail,
        )
    return table


def doctor(
    config: Annotated[Path, typer.Option("--config", "-c", help="The deployment's YAML config.")],
    api: Annotated[
        str | None, typer.Option(help="URL of a running API (finds `launch` pool workers).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per HTTP / Redis call.")] = 5.0,
    ray_timeout: Annotated[float, typer.Option(help="Seconds to join the Ray cluster.")] = 60.0,
    max_skew: Annotated[
        float, typer.Option(help="Clock skew (s) beyond which a check fails.")
    ] = 1.0,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check Redis, Ray, the API, every pool's workers (models, speculation) and clock skew.

    Exits 1 when a check fails, 2 when the config is invalid.
    """
    from tts_orchestrator.config import load_settings

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    options = DoctorOptions(
        api_url=api, timeout_s=timeout, ray_timeout_s=ray_timeout, max_skew_s=max_skew
    )
    report = asyncio.run(DeploymentDoctor(settings, options).run())
    if json_out:
        typer.echo(report.model_dump_json(indent=2))
    else:
        console = Console(width=160)
        console.print(render(report))
        failed = sum(r.status is CheckStatus.FAIL for r in report.results)
        console.print("[green]all checks passed[/]" if report.ok else f"[red]{failed} failed[/]")
    if not report.ok:
        raise typer.Exit(1)
