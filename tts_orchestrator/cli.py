"""The `tts-orchestrator` command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tts_orchestrator.exceptions import ConfigError

app = typer.Typer(help="Test-time-scaling reasoning service.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (see deploy/configs/).")
]


def _mount_subcommands() -> None:
    from tts_orchestrator.models.cli import models_app

    app.add_typer(models_app, name="models", help="List and pull the catalog's GGUF models.")


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "info",
) -> None:
    """Run the OpenAI-compatible API (starts Redis, Ray and the pools' workers as configured)."""
    import uvicorn

    from tts_orchestrator.api.app import build_app
    from tts_orchestrator.config import load_settings

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, dict[str, object]] = {"server": {}}
    if host is not None:
        overrides["server"]["host"] = host
    if port is not None:
        overrides["server"]["port"] = port
    try:
        settings = load_settings(config, **overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(
        build_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=log_level,
        timeout_graceful_shutdown=15,
    )


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Argument(help="YAML config to validate.")]) -> None:
    """Validate a config file and print the resolved settings."""
    from tts_orchestrator.config import load_settings

    try:
        settings = load_settings(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(settings.model_dump_json(indent=2))


_mount_subcommands()
