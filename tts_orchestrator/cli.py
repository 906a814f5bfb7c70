"""The `tts-orchestrator` command line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from tts_orchestrator.exceptions import ConfigError

app = typer.Typer(help="Test-time-scaling reasoning service.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config (see deploy/configs/).")
]


def _mount_subcommands() -> None:
    from evals.cli import eval_app, sweep_app
    from evals.sim_cli import simulate_command
    from tts_orchestrator.doctor.cli import doctor
    from tts_orchestrator.models.cli import models_app
    from tts_orchestrator.modes.cli import router_app
    from tts_orchestrator.planning.cli import plan_app, profile_app
    from tts_orchestrator.planning.reference_cli import reference_app
    from tts_orchestrator.security.cli import keys_app
    from tts_orchestrator.trim.cli import trim_replay

    app.add_typer(models_app, name="models", help="List and pull the catalog's GGUF models.")
    app.add_typer(eval_app, name="eval", help="Run and report evaluations on the live API.")
    app.add_typer(keys_app, name="keys", help="Create, revoke and list API keys.")
    app.command("trim-replay")(trim_replay)
    app.command("simulate")(simulate_command)
    app.command("doctor")(doctor)
    app.add_typer(profile_app, name="profile", help="Measure a pool's latency profile.")
    app.add_typer(plan_app, name="plan", help="Show the latency policy's decision table.")
    app.add_typer(
        reference_app, name="reference-profiles", help="Reference latency profiles (package data)."
    )
    app.add_typer(router_app, name="router", help="Fit and inspect the fast / slow router.")
    app.add_typer(sweep_app, name="sweep", help="Policy-config sweeps and Pareto reports.")


class GracefulServer:
    """uvicorn, plus: on SIGTERM/SIGINT stop admitting requests at once, give running ones a
    grace period, then cancel them (releasing their engine requests) before the app shuts down.
    Plain uvicorn would wait for open streams until its own timeout."""

    def __init__(self, config: Any, app_: Any, *, grace_s: float) -> None:
        import uvicorn

        outer = self

        class _Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                outer._drain()
                super().handle_exit(sig, frame)

        self._server = _Server(config)
        self._app = app_
        self._grace_s = grace_s
        self._drain_task: asyncio.Task[None] | None = None

    def _drain(self) -> None:
        services = getattr(self._app.state, "services", None)
        if services is None or self._drain_task is not None:
            return
        loop = asyncio.get_event_loop()
        self._drain_task = loop.create_task(services.orchestrator.shutdown(self._grace_s))

    def run(self) -> None:
        self._server.run()


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
    app_ = build_app(settings)
    server_config = uvicorn.Config(
        app_,
        host=settings.server.host,
        port=settings.server.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_s) + 5,
    )
    GracefulServer(server_config, app_, grace_s=settings.server.shutdown_grace_s).run()


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
