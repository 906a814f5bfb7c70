"""Matplotlib figures for runs and sweeps, rendered with the Agg canvas (no pyplot, no display).

The Agg canvas is attached per figure inside each function, so importing this module neither
imports pyplot nor changes matplotlib's global backend.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from evals.metrics import Estimate, MetricsReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ParetoPoint", "plot_pareto", "plot_run"]


class ParetoPoint(BaseModel):
    index: int
    label: str
    accuracy: Estimate
    cost: float
    optimal: bool


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _pareto_axes(axes: Axes, points: Sequence[ParetoPoint], *, xlabel: str) -> None:
    for optimal, colour, name in ((False, "#7b8794", "dominated"), (True, "#d1495b", "Pareto")):
        chosen = [p for p in points if p.optimal is optimal]
        if not chosen:
            continue
        axes.errorbar(
            [p.cost for p in chosen],
            [100 * p.accuracy.value for p in chosen],
            yerr=[
                [100 * max(0.0, p.accuracy.value - p.accuracy.low) for p in chosen],
                [100 * max(0.0, p.accuracy.high - p.accuracy.value) for p in chosen],
            ],
            fmt="o",
            markersize=5,
            color=colour,
            ecolor=colour,
            elinewidth=0.8,
            alpha=0.9,
            capsize=2,
            label=name,
        )
    front = sorted((p for p in points if p.optimal), key=lambda p: p.cost)
    if len(front) > 1:
        axes.step(
            [p.cost for p in front],
            [100 * p.accuracy.value for p in front],
            where="post",
            color="#d1495b",
            linewidth=1.0,
            alpha=0.7,
        )
    for p in points:
        axes.annotate(
            str(p.index),
            (p.cost, 100 * p.accuracy.value),
            textcoords="offset points",
            xytext=(3, 3),
            fontsize=7,
            color="#d1495b" if p.optimal else "#52606d",
            annotation_clip=True,
        )
    axes.set_xlabel(xlabel)
    axes.set_ylabel("accuracy (%), 95% interval")
    axes.grid(True, alpha=0.3)
    axes.margins(x=0.08, y=0.08)
    axes.legend(loc="best", fontsize=8)


def _front_caption(points: Sequence[ParetoPoint], *, name: str) -> str:
    front = sorted((p for p in points if p.optimal), key=lambda p: p.cost)
    items = [f"#{p.index} {p.label} ({100 * p.accuracy.value:.1f}%)" for p in front[:8]]
    more = f"; +{len(front) - 8} more" if len(front) > 8 else ""
    return f"Pareto ({name}): " + "; ".join(items) + more


def plot_pareto(
    latency_points: Sequence[ParetoPoint],
    token_points: Sequence[ParetoPoint],
    path: Path,
    *,
    title: str,
) -> Path:
    """Accuracy vs mean latency and vs mean tokens; points numbered as in the table."""
    figure = _new_figure(12.0, 6.0)
    grid = figure.add_gridspec(2, 2, height_ratios=(5, 1))
    left = figure.add_subplot(grid[0, 0])
    right = figure.add_subplot(grid[0, 1])
    caption = figure.add_subplot(grid[1, :])
    _pareto_axes(left, latency_points, xlabel="mean latency per request (s)")
    _pareto_axes(right, token_points, xlabel="mean generated tokens per request")
    caption.axis("off")
    caption.text(
        0.0,
        1.0,
        "\n".join(
            textwrap.fill(_front_caption(points, name=name), width=165)
            for points, name in ((latency_points, "latency"), (token_points, "tokens"))
        ),
        va="top",
        ha="left",
        fontsize=7.5,
        family="monospace",
        transform=caption.transAxes,
    )
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_run(metrics: MetricsReport, latencies: Sequence[float], path: Path, *, title: str) -> Path:
    """Accuracy per level (95% intervals) next to the latency distribution of one run."""
    figure = _new_figure(11.0, 4.5)
    left, right = figure.subplots(1, 2)
    groups = {"all": metrics.avg, **metrics.by_level}
    names = list(groups)
    values = [100 * groups[n].value for n in names]
    left.bar(names, values, color=["#30638e"] + ["#5fa8d3"] * (len(names) - 1))
    left.errorbar(
        names,
        values,
        yerr=[
            [100 * max(0.0, groups[n].value - groups[n].low) for n in names],
            [100 * max(0.0, groups[n].high - groups[n].value) for n in names],
        ],
        fmt="none",
        ecolor="black",
        capsize=4,
    )
    for i, n in enumerate(names):
        left.annotate(
            f"{values[i]:.0f}%\nn={groups[n].count}",
            (i, values[i] + 1.5),
            ha="center",
            va="bottom",
            fontsize=7.5,
            color="#1f2933",
        )
    left.set_ylim(0, 100)
    left.set_ylabel("avg@n accuracy (%) with 95% interval")
    left.grid(True, axis="y", alpha=0.3)
    if latencies:
        right.hist(latencies, bins=min(30, max(5, len(latencies) // 2)), color="#5fa8d3")
        for q, style in ((metrics.latency_p50_s, "--"), (metrics.latency_p95_s, ":")):
            if q is not None:
                right.axvline(q, color="#d1495b", linestyle=style)
        right.set_title(
            f"p50 {metrics.latency_p50_s or 0:.1f} s, p95 {metrics.latency_p95_s or 0:.1f} s",
            fontsize=9,
        )
    right.set_xlabel("latency per sample (s)")
    right.set_ylabel("samples")
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
