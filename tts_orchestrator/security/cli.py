"""`tts-orchestrator keys create | revoke | list`: manage API keys in the deployment's Redis.

A created key is printed once, alone on stdout (so ``KEY=$(tts-orchestrator keys create
--name ci)`` works); Redis keeps only its hash. ``list`` shows ids, names and limits, never a
key or a hash. The pepper comes from the config (``security.pepper`` or
``TTS_SECURITY__PEPPER``) and must be the service's.

The Redis is ``--redis-url``, else the config's ``redis.url``, else the service's private
server: reached through its data directory (``redis.data_dir``) while the service runs, or
started on that directory for the command when it does not.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from tts_orchestrator.config import Settings, load_settings
from tts_orchestrator.config.security import KeyLimits, SecurityConfig
from tts_orchestrator.exceptions import TTSError
from tts_orchestrator.security.keys import (
    KEY_NAME_PATTERN,
    ApiKeyStore,
    KeyHasher,
    SecurityKeySchema,
)
from tts_orchestrator.state.embedded import reach_data_dir, resolve_data_dir

keys_app = typer.Typer(
    help="API keys: create (shown once, stored hashed), revoke, list.", no_args_is_help=True
)

T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config; its redis.url or redis.data_dir is used."),
]
RedisUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="Redis URL (overrides the config's); with neither, the private Redis's data dir.",
    ),
]
_UNLIMITED_HELP = " 0 = unlimited; omitted = security.default_limits."


def security_section(settings: Settings) -> SecurityConfig:
    """The settings' `security` section (defaults while `Settings` has none)."""
    return settings.security


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except TTSError as exc:
        raise _fail(exc.message) from exc


@asynccontextmanager
async def _redis(settings: Settings, redis_url: str | None) -> AsyncIterator[str]:
    """The Redis the service keeps its keys in: the given or configured URL, else the private
    server's data directory (reached through the running service, or opened here)."""
    url = redis_url or settings.redis.url
    if url is not None:
        yield url
        return
    async with reach_data_dir(resolve_data_dir(settings.redis.data_dir)) as embedded_url:
        yield embedded_url


def _run(settings: Settings, redis_url: str | None, op: Callable[[ApiKeyStore], Awaitable[T]]) -> T:
    security = security_section(settings)
    pepper = security.pepper.get_secret_value() if security.pepper else None
    timeout_s = settings.redis.socket_timeout_s

    async def main() -> T:
        async with _redis(settings, redis_url) as url:
            return await _with_store(url)

    async def _with_store(url: str) -> T:
        client = Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        try:
            store = ApiKeyStore(
                client,
                hasher=KeyHasher(pepper),
                keys=SecurityKeySchema(),
                op_timeout_s=2 * timeout_s + 0.25,
            )
            return await op(store)
        finally:
            with suppress(RedisError, OSError):
                await client.aclose()

    try:
        return asyncio.run(main())
    except TTSError as exc:
        raise _fail(exc.message) from exc


def _limit(value: int | None, default: int | None) -> int | None:
    if value is None:
        return default
    return value or None


def _show(value: int | None) -> str:
    return "-" if value is None else str(value)


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@keys_app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    rpm: Annotated[
        int | None, typer.Option(min=0, help="Requests per minute." + _UNLIMITED_HELP)
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=0, help="Requests in flight." + _UNLIMITED_HELP)
    ] = None,
    daily_tokens: Annotated[
        int | None,
        typer.Option(min=0, help="Prompt + completion tokens per UTC day." + _UNLIMITED_HELP),
    ] = None,
    max_branches: Annotated[
        int | None, typer.Option(min=0, help="Cap on tts.n_branches." + _UNLIMITED_HELP)
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(min=0, help="Cap on max_tokens." + _UNLIMITED_HELP)
    ] = None,
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
) -> None:
    """Create a key and print it once (stdout); its id and limits go to stderr."""
    settings = _settings(config)
    defaults = security_section(settings).default_limits
    if re.fullmatch(KEY_NAME_PATTERN, name) is None:
        raise _fail(f"invalid --name {name!r}: 1-64 letters, digits, spaces or ._@:/+-")
    try:
        limits = KeyLimits(
            requests_per_minute=_limit(rpm, defaults.requests_per_minute),
            max_concurrent=_limit(concurrency, defaults.max_concurrent),
            daily_tokens=_limit(daily_tokens, defaults.daily_tokens),
            max_branches=_limit(max_branches, defaults.max_branches),
            max_tokens=_limit(max_tokens, defaults.max_tokens),
        )
    except ValueError as exc:
        raise _fail(f"invalid option: {exc}") from exc
    issued = _run(settings, redis_url, lambda store: store.create(name, limits=limits))
    typer.echo(issued.secret)
    typer.echo(
        f"created {issued.record.id} ({name}); limits: {limits.model_dump_json()}\n"
        "The key is shown only this once: Redis keeps only its hash.",
        err=True,
    )


@keys_app.command()
def revoke(
    key_id: Annotated[str, typer.Argument(help="Id from `keys list` (key_...).")],
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
) -> None:
    """Revoke a key: its next request gets 401 (requests in flight finish)."""
    record = _run(_settings(config), redis_url, lambda store: store.revoke(key_id))
    typer.echo(f"revoked {record.id} ({record.name}) at {_iso(record.revoked_at)}")


@keys_app.command("list")
def list_keys(
    config: ConfigOpt = None,
    redis_url: RedisUrlOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List keys with their limits (never a key or a hash)."""
    records = _run(_settings(config), redis_url, lambda store: store.list())
    if as_json:
        for r in records:
            typer.echo(r.model_dump_json())
        return
    header = ("ID", "NAME", "CREATED", "STATUS", "RPM", "CONC", "TOKENS/DAY", "BRANCHES", "MAX_TOK")
    rows = [header] + [
        (
            r.id,
            r.name,
            _iso(r.created_at),
            f"revoked {_iso(r.revoked_at)}" if r.revoked else "active",
            _show(r.limits.requests_per_minute),
            _show(r.limits.max_concurrent),
            _show(r.limits.daily_tokens),
            _show(r.limits.max_branches),
            _show(r.limits.max_tokens),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
