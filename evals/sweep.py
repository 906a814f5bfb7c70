"""Config sweeps: a YAML grid of `tts` options -> one run per point -> Pareto table and plots.

Grid file (all keys but ``grid`` optional)::

    name: branches-vs-trim
    base_tts: {aggregation: majority}      # fixed options merged into every point
    grid:                                   # cartesian product; keys listed in GRID_KEYS
      n_branches: [1, 2, 4, 8]
      trim: [false, true]
    live:                                   # used without --simulate
      dataset: math500
      limit: 20
      base_url: http://127.0.0.1:8000
    simulate:                               # used with --simulate (see evals.simulation)
      traces: [../data/samples/qwen2.5-math_math_cot_100x8.jsonl]
      model: {profile: cpu, pool: plain}

Relative trace paths are resolved against the grid file's directory. A simulated sweep keeps only
the problems whose group holds at least the grid's largest N, so every point sees the same
problems.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from evals.datasets import ProblemFilter, load_dataset
from evals.metrics import Estimate, MetricsReport, summarize
from evals.plots import ParetoPoint, plot_pareto
from evals.presets import SAMPLING_PRESETS, PromptPresetName, SamplingPresetName
from evals.records import SampleRecord, dump_json
from evals.runner import EvalRunner, GenerationConfig, ResponseGrader, RunSettings
from evals.scoring import AnswerEquivalence, build_outcomes
from evals.simulation import SimulationLab, SimulationModel
from tts_orchestrator.protocol import TtsOptions

__all__ = [
    "GRID_KEYS",
    "LiveSpec",
    "SimulateSpec",
    "SweepRow",
    "SweepSpec",
    "load_sweep_spec",
    "pareto_optimal",
    "run_live_sweep",
    "run_simulated_sweep",
    "write_sweep_outputs",
]

GRID_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "n_branches": "n_branches",
        "aggregation": "aggregation",
        "early_stop": "early_stop",
        "early_stop_window": "early_stop_window",
        "early_stop_threshold": "early_stop_threshold",
        "trim": "trim",
        "mode": "mode",
        "thinking_budget": "thinking_budget",
        "pool": "pool",
        "latency_budget_s": "latency_budget_s",
    }
)
"""Grid key -> field of the request's `tts` block."""

_SHORT = MappingProxyType(
    {
        "n_branches": "N",
        "aggregation": "agg",
        "early_stop": "stop",
        "early_stop_window": "w",
        "early_stop_threshold": "thr",
        "thinking_budget": "budget",
        "latency_budget_s": "deadline",
    }
)


class LiveSpec(BaseModel):
    """Dataset and server for a live sweep."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = "math500"
    limit: int | None = Field(default=None, ge=1)
    start: int = Field(default=0, ge=0)
    levels: tuple[int, ...] = ()
    n: int = Field(default=1, ge=1)
    model: str = "default"
    base_url: str = "http://127.0.0.1:8000"
    concurrency: int = Field(default=4, ge=1)
    sampling: SamplingPresetName = SamplingPresetName.REASONING
    max_tokens: int | None = Field(default=None, ge=1)
    prompt: PromptPresetName = PromptPresetName.BOXED
    extra_body: dict[str, Any] = Field(default_factory=dict)


class SimulateSpec(BaseModel):
    """Recorded traces and the assumed serving model for a simulated sweep."""

    model_config = ConfigDict(extra="forbid")

    traces: list[Path] = Field(min_length=1)
    datasets: list[str] = Field(default_factory=list, description="Keep these source datasets.")
    limit: int | None = Field(default=None, ge=1, description="First N problems (load order).")
    include_incomplete: bool = Field(default=False, description="Also cut-off traces.")
    verdict_delay_tokens: int = Field(default=0, ge=0, description="TrimR verdict latency.")
    model: SimulationModel = Field(default_factory=SimulationModel)


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "sweep"
    base_tts: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(min_length=1)
    live: LiveSpec | None = None
    simulate: SimulateSpec | None = None
    seed: int = Field(default=0, description="Seeds bootstrap intervals.")

    @field_validator("grid", "base_tts")
    @classmethod
    def _known_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(GRID_KEYS))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; valid: {', '.join(GRID_KEYS)}")
        if any(isinstance(v, list) and not v for v in value.values()):
            raise ValueError("every grid key needs at least one value")
        return value

    def points(self) -> list[dict[str, Any]]:
        """The `tts` block of every grid point, in row-major order of the grid keys."""
        keys = list(self.grid)
        return [
            {
                GRID_KEYS[k]: v
                for k, v in {**self.base_tts, **dict(zip(keys, combo, strict=True))}.items()
            }
            for combo in itertools.product(*(self.grid[k] for k in keys))
        ]

    def label(self, point: Mapping[str, Any]) -> str:
        varied = [k for k in self.grid if len(self.grid[k]) > 1] or list(self.grid)
        return " ".join(f"{_SHORT.get(k, k)}={point[GRID_KEYS[k]]}" for k in varied)


def load_sweep_spec(path: Path) -> SweepSpec:
    spec = SweepSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    if spec.simulate is not None:
        resolved = [
            t if t.is_absolute() else (path.parent / t).resolve() for t in spec.simulate.traces
        ]
        spec = spec.model_copy(
            update={"simulate": spec.simulate.model_copy(update={"traces": resolved})}
        )
    return spec


class SweepRow(BaseModel):
    """One grid point's outcome."""

    index: int = Field(description="1-based position in the grid; the plots use it.")
    label: str
    tts: dict[str, Any]
    accuracy: Estimate
    n_problems: int
    mean_latency_s: float
    p50_latency_s: float | None
    p95_latency_s: float | None
    mean_tokens: float
    pareto_latency: bool = False
    pareto_tokens: bool = False
    run_path: str | None = None


def pareto_optimal(accuracy: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """True where no other point is at least as accurate and as cheap, and better in one."""
    acc = np.asarray(accuracy, dtype=float)
    cst = np.asarray(cost, dtype=float)
    flags = []
    for i in range(acc.size):
        dominated = (acc >= acc[i]) & (cst <= cst[i]) & ((acc > acc[i]) | (cst < cst[i]))
        flags.append(not bool(dominated.any()))
    return flags


def _row(
    index: int,
    label: str,
    tts: dict[str, Any],
    records: Sequence[SampleRecord],
    metrics: MetricsReport,
) -> SweepRow:
    latencies = [r.latency_s for r in records if r.latency_s is not None]
    tokens = [
        r.thinking_tokens + r.answer_tokens
        for r in records
        if r.thinking_tokens is not None and r.answer_tokens is not None
    ]
    return SweepRow(
        index=index,
        label=label,
        tts=tts,
        accuracy=metrics.avg,
        n_problems=metrics.n_problems,
        mean_latency_s=float(np.mean(latencies)) if latencies else float("nan"),
        p50_latency_s=metrics.latency_p50_s,
        p95_latency_s=metrics.latency_p95_s,
        mean_tokens=float(np.mean(tokens)) if tokens else float("nan"),
    )


def _mark_pareto(rows: list[SweepRow]) -> list[SweepRow]:
    acc = [r.accuracy.value for r in rows]
    by_latency = pareto_optimal(acc, [r.mean_latency_s for r in rows])
    by_tokens = pareto_optimal(acc, [r.mean_tokens for r in rows])
    return [
        r.model_copy(update={"pareto_latency": lat, "pareto_tokens": tok})
        for r, lat, tok in zip(rows, by_latency, by_tokens, strict=True)
    ]


async def run_simulated_sweep(spec: SweepSpec) -> tuple[list[SweepRow], dict[str, Any]]:
    """Every grid point simulated over recorded banks (no server, no GPU); (rows, facts)."""
    if spec.simulate is None:
        raise ValueError("the grid file has no `simulate` section")
    sim = spec.simulate
    points = [TtsOptions.model_validate(tts) for tts in spec.points()]
    largest = max(p.n_branches or 1 for p in points)
    rows = []
    async with SimulationLab(
        sim.traces,
        datasets=sim.datasets,
        complete_only=not sim.include_incomplete,
        verdict_delay_tokens=sim.verdict_delay_tokens,
    ) as lab:
        available = len(lab.groups)
        lab.groups = [g for g in lab.groups if g.size >= largest][: sim.limit]
        if not lab.groups:
            raise ValueError(f"no problem has {largest} recorded samples")
        for index, (tts, point) in enumerate(zip(spec.points(), points, strict=True), start=1):
            result = await lab.run(point, sim.model)
            records = result.records()
            metrics = summarize(await build_outcomes(records), seed=spec.seed)
            rows.append(_row(index, spec.label(tts), tts, records, metrics))
        facts = {
            "tokenizer": lab.bank.counter.name,
            "profile": sim.model.profile,
            "pool": result.pool,
            "problems": len(lab.groups),
            "problems_left_out": available - len(lab.groups),
            "group_sizes": result.group_sizes,
        }
    return _mark_pareto(rows), facts


async def run_live_sweep(
    spec: SweepSpec,
    *,
    grader: ResponseGrader,
    checker: AnswerEquivalence | None,
    runs_dir: Path,
    app: Any | None = None,
    show_progress: bool = True,
) -> list[SweepRow]:
    """One resumable :class:`EvalRunner` run per grid point against the live API (or an app)."""
    live = spec.live or LiveSpec()
    problems = ProblemFilter(levels=live.levels, start=live.start, limit=live.limit).apply(
        load_dataset(live.dataset)
    )
    sampling = SAMPLING_PRESETS[live.sampling].model_copy(update={"max_tokens": live.max_tokens})
    settings = RunSettings(base_url=live.base_url, concurrency=live.concurrency, out_dir=runs_dir)
    rows = []
    for index, tts in enumerate(spec.points(), start=1):
        config = GenerationConfig(
            dataset=live.dataset,
            model=live.model,
            n=live.n,
            prompt=live.prompt,
            sampling=sampling,
            tts=tts,
            extra_body=live.extra_body,
        )
        runner = EvalRunner(config, settings, grader=grader, app=app)
        result = await runner.run(problems, show_progress=show_progress)
        metrics = summarize(await build_outcomes(result.records, checker=checker), seed=spec.seed)
        row = _row(index, spec.label(tts), tts, result.records, metrics)
        rows.append(row.model_copy(update={"run_path": str(result.run_path)}))
    return _mark_pareto(rows)


_COLUMNS = (
    "index",
    "label",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_problems",
    "mean_latency_s",
    "p95_latency_s",
    "mean_tokens",
    "pareto_latency",
    "pareto_tokens",
    "tts",
)


def _cells(row: SweepRow) -> list[Any]:
    return [
        row.index,
        row.label,
        round(row.accuracy.value, 4),
        round(row.accuracy.low, 4),
        round(row.accuracy.high, 4),
        row.n_problems,
        round(row.mean_latency_s, 3),
        None if row.p95_latency_s is None else round(row.p95_latency_s, 3),
        round(row.mean_tokens, 1),
        row.pareto_latency,
        row.pareto_tokens,
        json.dumps(row.tts, sort_keys=True),
    ]


def pareto_markdown(rows: Sequence[SweepRow], *, title: str, note: str = "") -> str:
    lines = [
        f"# {title}",
        "",
        *([note, ""] if note else []),
        "Accuracy is avg@n with a 95% interval; ★ marks Pareto-optimal points "
        "(no other point is at least as accurate and cheaper).",
        "",
        "| # | point | accuracy (95% CI) | mean latency (s) | p95 latency (s) | mean tokens "
        "| Pareto latency | Pareto tokens |",
        "| ---: | --- | --- | ---: | ---: | ---: | :---: | :---: |",
    ]
    for r in sorted(rows, key=lambda r: r.mean_latency_s):
        p95 = "—" if r.p95_latency_s is None else f"{r.p95_latency_s:.2f}"
        lines.append(
            f"| {r.index} | {r.label} | {100 * r.accuracy.value:.1f}% "
            f"({100 * r.accuracy.low:.1f}–{100 * r.accuracy.high:.1f}) "
            f"| {r.mean_latency_s:.2f} | {p95} | {r.mean_tokens:.0f} "
            f"| {'★' if r.pareto_latency else ''} | {'★' if r.pareto_tokens else ''} |"
        )
    return "\n".join(lines) + "\n"


def write_sweep_outputs(
    rows: Sequence[SweepRow],
    out_dir: Path,
    *,
    title: str,
    meta: Mapping[str, Any],
    note: str = "",
) -> dict[str, Path]:
    """pareto.md, pareto.csv, pareto.png and sweep.json in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "pareto.md",
        "csv": out_dir / "pareto.csv",
        "plot": out_dir / "pareto.png",
        "json": out_dir / "sweep.json",
    }
    paths["markdown"].write_text(pareto_markdown(rows, title=title, note=note), encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(_COLUMNS)
        writer.writerows(_cells(r) for r in rows)

    latency_points = [
        ParetoPoint(
            index=r.index,
            label=r.label,
            accuracy=r.accuracy,
            cost=r.mean_latency_s,
            optimal=r.pareto_latency,
        )
        for r in rows
    ]
    token_points = [
        ParetoPoint(
            index=r.index,
            label=r.label,
            accuracy=r.accuracy,
            cost=r.mean_tokens,
            optimal=r.pareto_tokens,
        )
        for r in rows
    ]
    plot_pareto(latency_points, token_points, paths["plot"], title=title)
    dump_json(paths["json"], {**meta, "rows": [r.model_dump(mode="json") for r in rows]})
    return paths
