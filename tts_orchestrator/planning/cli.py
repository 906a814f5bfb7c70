"""`tts-orchestrator profile` and `tts-orchestrator plan`: the latency policy on the command line.

``profile --config FILE --pool P`` starts the pool's worker exactly as the service would (same
command builder, same environment; no Ray needed), or uses its first configured URL, measures it
(:mod:`tts_orchestrator.planning.profiler`), prints the measurements and stores the profile
in a JSON file and, when the config names a Redis, in Redis. ``plan --budget 10`` prints the
decision table for one request from stored profiles (with none measured: a shipped reference
profile, and it says so).

Mount on the root app: ``app.add_typer(profile_app, name="profile")`` and
``app.add_typer(plan_app, name="plan")``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from policies.allocator import AllocationDecision, SearchMethod
from policies.latency import LognormalBranchLengths
from policies.profile import ProfileSet
from policies.reference import DEFAULT_REFERENCE, load_reference, reference_names
from tts_orchestrator.backends.base import WorkerBackend
from tts_orchestrator.backends.launcher import COMMAND_BUILDERS, ManagedWorker, free_port
from tts_orchestrator.backends.llamacpp import LlamaCppBackend
from tts_orchestrator.config import EngineKind, PoolConfig, Settings, load_settings
from tts_orchestrator.config.planning import DEFAULT_SIGMA, PlannerSettings
from tts_orchestrator.exceptions import ConfigError, TTSError
from tts_orchestrator.planning.planner import Plan, Planner, PlanRequest, load_accuracy
from tts_orchestrator.planning.profiler import ProfilerSettings, ProfileRun, WorkerProfiler
from tts_orchestrator.planning.store import FileProfileStore, RedisProfileStore

DEFAULT_PROFILES = Path("profiles.json")

profile_app = typer.Typer(help="Measure a pool's worker and store its latency profile.")
plan_app = typer.Typer(help="Print the latency policy's decision table for one request.")

BackendFactory = Callable[[str, PoolConfig, httpx.AsyncClient], WorkerBackend]


def _llama_cpp_backend(url: str, pool: PoolConfig, client: httpx.AsyncClient) -> WorkerBackend:
    return LlamaCppBackend(url=url, model=pool.model, client=client, name=f"{pool.name}/profile")


def _vllm_backend(url: str, pool: PoolConfig, client: httpx.AsyncClient) -> WorkerBackend:
    from tts_orchestrator.backends.vllm import VLLMBackend

    return VLLMBackend(url=url, model=pool.model, client=client, name=f"{pool.name}/profile")


BACKENDS: Mapping[EngineKind, BackendFactory] = {
    "llama_cpp": _llama_cpp_backend,
    "vllm": _vllm_backend,
}


@contextlib.asynccontextmanager
async def worker_url(pool: PoolConfig, settings: Settings) -> AsyncIterator[str]:
    """The URL of one worker of ``pool``: its first configured URL, or one started for it."""
    if pool.urls:
        yield pool.urls[0]
        return
    spec = pool.launch
    if spec is None:
        raise ConfigError(f"pool {pool.name} has neither urls nor a launch spec")
    builder = COMMAND_BUILDERS.get(pool.engine)
    if builder is None:
        raise ConfigError(f"engine {pool.engine!r} cannot be launched; give `urls`")
    from tts_orchestrator.models.pull import resolve_model_path

    models_dir = settings.models.dir
    model = await asyncio.to_thread(resolve_model_path, spec.model_path, models_dir)
    draft_name = pool.speculative.draft_model
    draft = (
        await asyncio.to_thread(resolve_model_path, draft_name, models_dir) if draft_name else None
    )
    port = free_port()
    worker = ManagedWorker(
        builder(pool, spec, model, port, draft),
        port=port,
        spec=spec.model_copy(update={"restart": False}),
        name=f"{pool.name}/profile",
    )
    await worker.start()
    try:
        yield worker.url
    finally:
        await worker.stop()


async def profile_pool(
    settings: Settings, pool_name: str, profiler_settings: ProfilerSettings
) -> ProfileRun:
    """Start (or reach) one worker of the pool and profile it."""
    try:
        pool = settings.pool(pool_name)
    except KeyError:
        known = [p.name for p in settings.pools]
        raise ConfigError(f"no pool {pool_name!r} in the config; pools: {known}") from None
    factory = BACKENDS.get(pool.engine)
    if factory is None:
        raise ConfigError(f"pool {pool.name}: engine {pool.engine!r} cannot be profiled")
    async with worker_url(pool, settings) as url, httpx.AsyncClient() as client:
        backend = factory(url, pool, client)
        return await WorkerProfiler(backend, pool=pool, settings=profiler_settings).run()


def render_run(run: ProfileRun) -> Table:
    p = run.profile
    table = Table(
        title=f"{p.pool}: {p.model} on {p.engine} ({p.speculative_method.value}"
        f"{f', k={p.speculative_depth}' if p.speculates else ''}) - {p.machine}"
    )
    for col in ("B", "ms/token", "tokens/s/seq", "tokens/s total", "tokens/step", "step ms"):
        table.add_column(col, justify="right")
    table.add_column("engine ms/token", justify="right")
    for s in run.samples:
        engine = f"{s.engine_per_token_s * 1e3:.1f}" if s.engine_per_token_s else "-"
        table.add_row(
            str(s.concurrency),
            f"{s.per_token_s * 1e3:.1f}",
            f"{s.tokens_per_s:.2f}",
            f"{s.tokens_per_s * s.concurrency:.2f}",
            f"{s.tokens_per_step:.2f}",
            f"{p.step_time_s(s.concurrency) * 1e3:.1f}",
            engine,
        )
    table.caption = (
        f"prefill {run.prefill.tokens_per_s:.1f} tokens/s ({run.prefill.prompt_tokens} tokens, "
        f"{run.prefill.source}); accepted tokens/step {p.accepted_tokens_per_step:.2f}; "
        f"{run.duration_s:.0f} s"
    )
    return table


def render_decision(decision: AllocationDecision, *, budget: float | None) -> Table:
    title = "Latency policy" + (f" - budget {budget:g} s" if budget is not None else "")
    table = Table(title=title, caption=decision.explanation)
    for col in ("pool", "spec", "N", "thinking budget", "latency s", "accuracy", "fits", "why"):
        table.add_column(col, justify="left" if col in ("pool", "why", "spec") else "right")
    for row in decision.table():
        chosen = row["why"] == "chosen"
        spec = str(row["speculative_method"])
        if row["speculative_depth"]:
            spec += f" k={row['speculative_depth']}"
        table.add_row(
            str(row["pool"]),
            spec,
            str(row["n_branches"]),
            "unlimited" if row["thinking_budget"] is None else str(row["thinking_budget"]),
            f"{row['predicted_latency_s']:.2f}",
            f"{row['predicted_accuracy']:.3f}",
            "yes" if row["feasible"] else "no",
            str(row["why"]),
            style="bold green" if chosen else None,
        )
    return table


def _fail(exc: TTSError) -> typer.Exit:
    typer.echo(f"error: {exc.message}", err=True)
    return typer.Exit(2)


def _concurrency_list(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


@profile_app.callback(invoke_without_command=True)
def profile(
    config: Annotated[Path, typer.Option("--config", "-c", help="Service YAML config.")],
    pool: Annotated[str, typer.Option("--pool", "-p", help="Pool to profile.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Profiles JSON to add this pool's profile to.")
    ] = DEFAULT_PROFILES,
    concurrency: Annotated[
        str | None, typer.Option(help="Concurrencies, e.g. 1,2,4 [default: 1, 2, 4 ... slots].")
    ] = None,
    decode_tokens: Annotated[int, typer.Option(help="Tokens per probe stream.")] = 64,
    prefill_tokens: Annotated[int, typer.Option(help="Length of the prefill probe.")] = 256,
    redis_url: Annotated[
        str | None, typer.Option(help="Also store in this Redis [default: the config's].")
    ] = None,
) -> None:
    """Profile one pool's worker: step time by concurrency, prefill rate, acceptance."""
    console = Console()
    try:
        settings = load_settings(config)
        run = asyncio.run(
            profile_pool(
                settings,
                pool,
                ProfilerSettings(
                    concurrencies=_concurrency_list(concurrency),
                    decode_tokens=decode_tokens,
                    prefill_tokens=prefill_tokens,
                ),
            )
        )
    except TTSError as exc:
        raise _fail(exc) from exc
    console.print(render_run(run))
    for warning in run.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    FileProfileStore(out).merge(run.profile)
    console.print(f"profile of {pool} written to {out}")
    url = redis_url or settings.redis.url
    if url is not None:
        try:
            asyncio.run(_store_in_redis(url, run))
        except TTSError as exc:
            raise _fail(exc) from exc
        console.print(f"profile of {pool} stored in Redis at {url}")


async def _store_in_redis(url: str, run: ProfileRun) -> None:
    store = RedisProfileStore.from_url(url)
    try:
        await store.put(run.profile)
    finally:
        await store.aclose()


@plan_app.callback(invoke_without_command=True)
def plan(
    budget: Annotated[float, typer.Option("--budget", "-b", help="Latency budget in seconds.")],
    profiles: Annotated[
        Path, typer.Option("--profiles", help="Profiles JSON written by `profile`.")
    ] = DEFAULT_PROFILES,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt length in tokens.")] = 200,
    model: Annotated[
        str | None, typer.Option(help="Served model [default: the first profiled one].")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Per-branch max_tokens.")] = None,
    n_branches: Annotated[int | None, typer.Option(help="Fix N (the user's choice).")] = None,
    search: Annotated[SearchMethod, typer.Option(help="Search method.")] = SearchMethod.GREEDY,
    accuracy_logs: Annotated[
        Path | None, typer.Option(help="JSONL of per-problem branch samples.")
    ] = None,
    median_tokens: Annotated[
        float | None, typer.Option(help="Median branch length (lognormal) instead of default.")
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Plan on a shipped reference profile (`tts-orchestrator reference-profiles`) "
            f"[default: the measured --profiles file, else {DEFAULT_REFERENCE}].",
        ),
    ] = None,
) -> None:
    """Print the (pool, N, thinking budget) decision for one request under a latency budget."""
    try:
        stored, source = load_profiles(profiles, reference)
        chosen = plan_from_profiles(
            stored,
            budget=budget,
            prompt_tokens=prompt_tokens,
            model=model,
            max_tokens=max_tokens,
            n_branches=n_branches,
            settings=_planner_settings(search, median_tokens),
            accuracy_logs=accuracy_logs,
        )
    except TTSError as exc:
        raise _fail(exc) from exc
    console = Console()
    console.print(source, soft_wrap=True)
    console.print(render_decision(chosen.decision, budget=budget))


def _planner_settings(search: SearchMethod, median_tokens: float | None) -> PlannerSettings:
    update: dict[str, object] = {"search": search}
    if median_tokens is not None:
        update["lengths"] = LognormalBranchLengths.from_median(median_tokens, sigma=DEFAULT_SIGMA)
    return PlannerSettings().model_copy(update=update)


def load_profiles(path: Path, reference: str | None = None) -> tuple[ProfileSet, str]:
    """The profiles `plan` uses and a line saying where they come from: the named reference,
    else the measured file, else the default reference (never silently)."""
    if reference is None:
        stored = FileProfileStore(path).read()
        if stored.profiles:
            return stored, f"Profiles: measured, from {path}."
    name = reference or DEFAULT_REFERENCE
    try:
        profiles = load_reference(name)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    source = f"Profiles: reference {name!r} ({profiles.profiles[0].machine})."
    if reference is None:
        others = ", ".join(n for n in reference_names() if n != name)
        source = (
            f"No measured profiles in {path} (run `tts-orchestrator profile`): using the "
            f"REFERENCE profiles {name!r}, not measurements of this machine "
            f"({profiles.profiles[0].machine}). Others: {others} (--profile NAME)."
        )
    return profiles, source


def plan_from_profiles(
    stored: ProfileSet,
    *,
    budget: float,
    prompt_tokens: int,
    model: str | None = None,
    max_tokens: int | None = None,
    n_branches: int | None = None,
    settings: PlannerSettings | None = None,
    accuracy_logs: Path | None = None,
) -> Plan:
    """The plan for one request on ``stored`` profiles (what `plan` prints)."""
    planner = Planner(
        stored, accuracy=load_accuracy(accuracy_logs), settings=settings or PlannerSettings()
    )
    return planner.plan(
        PlanRequest(
            model=model or _first_model(stored),
            prompt_tokens=prompt_tokens,
            latency_budget_s=budget,
            max_tokens=max_tokens,
            n_branches=n_branches,
        )
    )


def _first_model(profiles: ProfileSet) -> str:
    return profiles.profiles[0].model
