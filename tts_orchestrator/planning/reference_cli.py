"""`tts-orchestrator reference-profiles write | check | show`: the shipped reference profiles.

``write`` regenerates ``policies/data/profiles/*.json`` from :mod:`policies.reference` (the
roofline inputs and the measured CPU profile); ``check`` fails when a shipped file differs from
what ``write`` would produce; ``show NAME`` prints one set with the roofline's breakdown of each
step (what bounds it, and where the time goes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from policies.reference import (
    ROOFLINE_REFERENCES,
    RooflineReference,
    build_reference_profiles,
    load_reference,
    reference_names,
)
from policies.roofline import batch_levels

reference_app = typer.Typer(
    help="Reference latency profiles (roofline for GPU-class devices, measured CPU).",
    no_args_is_help=True,
)


def _data_dir() -> Path:
    import policies.data.profiles as package

    return Path(package.__file__).parent


def stale_references(directory: Path) -> list[str]:
    """Names whose file in ``directory`` is missing or differs from the computed profiles."""
    stale = []
    for name, profiles in build_reference_profiles().items():
        path = directory / f"{name}.json"
        if not path.exists() or path.read_text(encoding="utf-8") != profiles.to_json() + "\n":
            stale.append(name)
    return stale


@reference_app.command("write")
def write(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to write [default: the package data].")
    ] = None,
) -> None:
    """Compute every reference profile set and write it as `profile` writes profiles."""
    out = directory or _data_dir()
    out.mkdir(parents=True, exist_ok=True)
    for name, profiles in build_reference_profiles().items():
        profiles.save(out / f"{name}.json")
        typer.echo(f"wrote {out / f'{name}.json'}")


@reference_app.command("check")
def check(
    directory: Annotated[Path | None, typer.Option("--dir", help="Shipped files.")] = None,
) -> None:
    """Exit 1 when a shipped reference profile is not what `write` would produce."""
    stale = stale_references(directory or _data_dir())
    if stale:
        typer.echo(f"stale: {', '.join(stale)}; run `tts-orchestrator reference-profiles write`")
        raise typer.Exit(1)
    typer.echo("reference profiles are up to date")


def roofline_table(ref: RooflineReference) -> Table:
    d = ref.deployment
    profiles = ref.profiles()
    plain, draft = profiles.get("plain"), profiles.get("draft")
    table = Table(title=f"{ref.name}: {ref.machine()}")
    for col in (
        "B",
        "bound",
        "verify bound",
        "weights ms",
        "KV ms",
        "linear compute ms",
        "plain step ms",
        "plain tok/s/seq",
        "draft step ms",
        "draft tok/s/seq",
        "speedup",
    ):
        table.add_column(col, justify="right")
    for b in batch_levels(plain.max_concurrency):
        cost = d.forward(sequences=b)
        verify = d.forward(sequences=b, tokens_per_sequence=ref.depth + 1)
        table.add_row(
            str(b),
            cost.bound.value,
            verify.bound.value,
            f"{cost.weights_s * 1e3:.2f}",
            f"{cost.kv_s * 1e3:.2f}",
            f"{cost.linear_compute_s * 1e3:.2f}",
            f"{plain.step_time_s(b) * 1e3:.2f}",
            f"{plain.decode_tokens_per_s(b):.1f}",
            f"{draft.step_time_s(b) * 1e3:.2f}",
            f"{draft.decode_tokens_per_s(b):.1f}",
            f"{draft.speedup_over(plain, b):.2f}",
        )
    table.caption = (
        f"knee B* = {d.knee_batch():.0f} (verify: {d.knee_batch(ref.depth + 1):.0f}); slots plain "
        f"{plain.max_concurrency}, draft {draft.max_concurrency}; prefill "
        f"{plain.prefill_tokens_per_s:,.0f} tokens/s; tokens/step {draft.accepted_tokens_per_step}"
    )
    return table


def profile_set_table(name: str) -> Table:
    profiles = load_reference(name)
    table = Table(title=f"{name}: {profiles.profiles[0].machine}")
    for col in ("pool", "spec", "B", "step ms", "tok/s/seq", "prefill tok/s", "slots"):
        table.add_column(col, justify="left" if col in ("pool", "spec") else "right")
    for p in profiles.profiles:
        spec = p.speculative_method.value + (f" k={p.speculative_depth}" if p.speculates else "")
        for point in p.step_times:
            table.add_row(
                p.pool,
                spec,
                str(point.concurrency),
                f"{point.step_time_s * 1e3:.1f}",
                f"{p.decode_tokens_per_s(point.concurrency):.2f}",
                f"{p.prefill_tokens_per_s:.0f}",
                str(p.max_concurrency),
            )
    return table


@reference_app.command("show")
def show(name: Annotated[str, typer.Argument(help="A shipped profile set.")]) -> None:
    """Print one reference profile set (with the roofline breakdown when it is computed)."""
    if name not in reference_names():
        typer.echo(f"error: no reference profile {name!r}; shipped: {reference_names()}", err=True)
        raise typer.Exit(2)
    by_name = {ref.name: ref for ref in ROOFLINE_REFERENCES}
    table = roofline_table(by_name[name]) if name in by_name else profile_set_table(name)
    Console(width=200).print(table)
