"""Run reports that carry what is needed to reproduce a number.

A report records the serving stack (engine, model, quantisation), the machine, package versions
and the exact generation config next to the metrics, as JSON and as markdown.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from evals.metrics import Estimate, MetricsReport, PairedComparison
from evals.records import dump_json

__all__ = [
    "REPORTED_PACKAGES",
    "EnvironmentInfo",
    "RunReport",
    "ServingInfo",
    "collect_environment",
    "comparison_markdown",
    "metrics_markdown",
    "render_markdown",
    "write_report",
]

REPORTED_PACKAGES: tuple[str, ...] = (
    "tts-orchestrator",
    "xllamacpp",
    "vllm",
    "ray",
    "math-verify",
    "sympy",
    "numpy",
    "pydantic",
    "httpx",
    "fastapi",
)


class ServingInfo(BaseModel):
    engine: str | None = Field(default=None, description="e.g. llama.cpp (xllamacpp), vLLM.")
    model: str | None = Field(default=None, description="Model name the server reported.")
    quantization: str | None = Field(default=None, description="e.g. Q4_K_M, bf16.")
    server: dict[str, Any] | None = Field(default=None, description="GET /v1/models response.")


class EnvironmentInfo(BaseModel):
    platform: str
    machine: str
    processor: str
    python: str
    cpu_count: int | None
    memory_gib: float | None
    packages: dict[str, str] = Field(description="Installed versions; absent packages omitted.")


class RunReport(BaseModel):
    title: str
    created_at: str
    dataset: str
    config_hash: str | None = None
    config: dict[str, Any] = Field(description="The exact generation config of the run.")
    selection: dict[str, Any] = Field(default_factory=dict, description="Problem filter used.")
    serving: ServingInfo
    environment: EnvironmentInfo
    metrics: MetricsReport
    run_file: str | None = None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def collect_environment(packages: Sequence[str] = REPORTED_PACKAGES) -> EnvironmentInfo:
    versions: dict[str, str] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return EnvironmentInfo(
        platform=platform.platform(),
        machine=platform.machine(),
        processor=platform.processor() or platform.machine(),
        python=sys.version.split()[0],
        cpu_count=os.cpu_count(),
        memory_gib=_memory_gib(),
        packages=versions,
    )


def _pct(e: Estimate) -> str:
    return f"{100 * e.value:.1f}% [{100 * e.low:.1f}, {100 * e.high:.1f}]"


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def metrics_markdown(metrics: MetricsReport) -> str:
    """The metrics as markdown tables (headline, per level, per subject)."""
    lines = [
        "| metric | value (95% interval) | problems | interval |",
        "| --- | --- | ---: | --- |",
        f"| avg@n | {_pct(metrics.avg)} | {metrics.avg.count} | {metrics.avg.method} |",
    ]
    for k, e in metrics.maj_at.items():
        lines.append(f"| maj@{k} | {_pct(e)} | {e.count} | {e.method} |")
    for k, e in metrics.pass_at.items():
        lines.append(f"| pass@{k} | {_pct(e)} | {e.count} | {e.method} |")
    lines += [
        "",
        "| samples | errors | latency p50 / p95 (s) | TTFT p50 / p95 (s) "
        "| thinking tokens | answer tokens | total tokens |",
        "| ---: | ---: | --- | --- | ---: | ---: | ---: |",
        f"| {metrics.n_samples} | {metrics.errors} "
        f"| {_num(metrics.latency_p50_s)} / {_num(metrics.latency_p95_s)} "
        f"| {_num(metrics.ttft_p50_s)} / {_num(metrics.ttft_p95_s)} "
        f"| {_num(metrics.mean_thinking_tokens, '.0f')} "
        f"| {_num(metrics.mean_answer_tokens, '.0f')} "
        f"| {_num(metrics.mean_total_tokens, '.0f')} |",
    ]
    for name, groups in (("level", metrics.by_level), ("subject", metrics.by_subject)):
        if not groups:
            continue
        lines += ["", f"| {name} | avg@n (95% interval) | problems |", "| --- | --- | ---: |"]
        lines += [f"| {label} | {_pct(e)} | {e.count} |" for label, e in groups.items()]
    return "\n".join(lines) + "\n"


def comparison_markdown(comparison: PairedComparison, *, name_a: str, name_b: str) -> str:
    d = comparison.difference
    p = "—" if comparison.mcnemar_p is None else f"{comparison.mcnemar_p:.3g}"
    return (
        f"Paired comparison on {comparison.n_problems} shared problems\n\n"
        "| A | B | acc A | acc B | A − B (95% bootstrap) | A better | B better | ties "
        "| McNemar p |\n"
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n"
        f"| {name_a} | {name_b} | {100 * comparison.mean_a:.1f}% | {100 * comparison.mean_b:.1f}% "
        f"| {100 * d.value:+.1f} pts [{100 * d.low:+.1f}, {100 * d.high:+.1f}] "
        f"| {comparison.a_better} | {comparison.b_better} | {comparison.ties} | {p} |\n"
    )


def render_markdown(report: RunReport) -> str:
    env = report.environment
    serving = report.serving
    packages = ", ".join(f"{k} {v}" for k, v in sorted(env.packages.items()))
    config_lines = "\n".join(
        f"| `{k}` | `{v}` |" for k, v in sorted(report.config.items()) if k != "dataset"
    )
    return (
        f"# {report.title}\n\n"
        f"{report.created_at} · dataset `{report.dataset}` · config `{report.config_hash}`\n\n"
        f"## Metrics\n\n{metrics_markdown(report.metrics)}\n"
        "## Setup\n\n"
        f"- engine: {serving.engine or 'not reported'}; model: {serving.model or 'not reported'}; "
        f"quantisation: {serving.quantization or 'not reported'}\n"
        f"- machine: {env.platform}, {env.machine}, {env.cpu_count} CPUs, "
        f"{env.memory_gib} GiB, Python {env.python}\n"
        f"- packages: {packages}\n"
        f"- selection: `{report.selection}`\n"
        f"- run file: `{report.run_file}`\n\n"
        "| config | value |\n| --- | --- |\n"
        f"{config_lines}\n"
    )


def write_report(report: RunReport, stem: Path) -> tuple[Path, Path]:
    """``<stem>.report.md`` and ``<stem>.report.json``."""
    markdown = stem.with_name(stem.name + ".report.md")
    payload = stem.with_name(stem.name + ".report.json")
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render_markdown(report), encoding="utf-8")
    dump_json(payload, report.model_dump(mode="json"))
    return markdown, payload


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
