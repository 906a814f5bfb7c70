import json
from pathlib import Path

from evals.metrics import ProblemOutcome, compare_runs, summarize
from evals.plots import plot_run
from evals.report import (
    RunReport,
    ServingInfo,
    collect_environment,
    comparison_markdown,
    metrics_markdown,
    render_markdown,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics():
    outcomes = [
        ProblemOutcome(
            problem_id=str(i),
            level=1 + i % 3,
            subject="Algebra" if i % 2 else "Geometry",
            correct=(i % 4 != 0, i % 3 != 0),
            clusters=(0 if i % 4 != 0 else 1, 0 if i % 3 != 0 else 1),
            latency_s=(1.0 + i, 2.0 + i),
            thinking_tokens=(100, 200),
            answer_tokens=(10, 20),
        )
        for i in range(12)
    ]
    return summarize(outcomes, seed=0)


def test_environment_lists_machine_and_installed_versions() -> None:
    env = collect_environment()
    assert env.cpu_count is not None
    assert env.cpu_count >= 1
    assert "numpy" in env.packages
    assert "pydantic" in env.packages
    assert "vllm" not in collect_environment(["surely-not-installed-pkg", "numpy"]).packages


def test_metrics_table_has_every_metric_row() -> None:
    table = metrics_markdown(_metrics())
    for row in ("| avg@n |", "| maj@1 |", "| maj@2 |", "| pass@2 |", "| Level 1 |", "| Geometry |"):
        assert row in table
    assert "| 24 | 0 |" in table  # samples, errors


def test_report_records_config_serving_and_versions(tmp_path: Path) -> None:
    report = RunReport(
        title="math500 demo",
        created_at="2025-01-01T00:00:00+00:00",
        dataset="math500",
        config_hash="abc123",
        config={"dataset": "math500", "n": 2, "tts": {"n_branches": 4}},
        selection={"limit": 20},
        serving=ServingInfo(engine="llama.cpp", model="qwen3-0.6b", quantization="Q8_0"),
        environment=collect_environment(),
        metrics=_metrics(),
        run_file="runs/math500-abc123.jsonl",
    )
    markdown_path, json_path = write_report(report, tmp_path / "math500-abc123")
    markdown = markdown_path.read_text()
    assert markdown_path.name == "math500-abc123.report.md"
    assert "engine: llama.cpp; model: qwen3-0.6b; quantisation: Q8_0" in markdown
    assert "| `tts` | `{'n_branches': 4}` |" in markdown
    assert "numpy " in markdown
    assert markdown == render_markdown(report)
    payload = json.loads(json_path.read_text())
    assert payload["config"]["tts"] == {"n_branches": 4}
    assert payload["metrics"]["avg"]["count"] == 12


def test_comparison_markdown_shows_signed_difference() -> None:
    a = [ProblemOutcome(problem_id=str(i), correct=(True,), clusters=(0,)) for i in range(4)]
    b = [ProblemOutcome(problem_id=str(i), correct=(i < 2,), clusters=(0,)) for i in range(4)]
    text = comparison_markdown(compare_runs(a, b), name_a="trim", name_b="base")
    assert "| trim | base | 100.0% | 50.0% | +50.0 pts" in text


def test_run_plot_is_a_png(tmp_path: Path) -> None:
    path = plot_run(_metrics(), [1.0, 2.0, 3.5, 8.0], tmp_path / "run.png", title="demo")
    assert path.read_bytes()[:8] == PNG_MAGIC
