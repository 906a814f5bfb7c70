import csv
import time
from pathlib import Path

import pytest
import yaml

from evals.sweep import (
    SweepSpec,
    load_sweep_spec,
    pareto_optimal,
    run_live_sweep,
    run_simulated_sweep,
    write_sweep_outputs,
)

SAMPLES = (
    Path(__file__).resolve().parents[3]
    / "evals"
    / "data"
    / "samples"
    / "qwen2.5-math_math_cot_100x8.jsonl"
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("accuracy", "cost", "expected"),
    [
        ([0.5, 0.6, 0.7], [1, 2, 3], [True, True, True]),  # a clean frontier
        ([0.5, 0.4, 0.7], [1, 2, 3], [True, False, True]),  # worse and dearer
        ([0.5, 0.5], [1, 1], [True, True]),  # identical points do not dominate each other
        ([0.5, 0.5], [1, 2], [True, False]),  # same accuracy, dearer
        ([0.9], [5], [True]),
    ],
    ids=["frontier", "dominated", "duplicates", "dearer-tie", "single"],
)
def test_pareto_optimal(accuracy, cost, expected) -> None:
    assert pareto_optimal(accuracy, cost) == expected


def test_grid_expands_to_tts_blocks_with_short_labels() -> None:
    spec = SweepSpec(
        base_tts={"aggregation": "majority"},
        grid={"n_branches": [1, 2], "trim": [False, True], "pool": ["cpu"]},
    )
    points = spec.points()
    assert points == [
        {"aggregation": "majority", "n_branches": 1, "trim": False, "pool": "cpu"},
        {"aggregation": "majority", "n_branches": 1, "trim": True, "pool": "cpu"},
        {"aggregation": "majority", "n_branches": 2, "trim": False, "pool": "cpu"},
        {"aggregation": "majority", "n_branches": 2, "trim": True, "pool": "cpu"},
    ]
    assert spec.label(points[3]) == "N=2 trim=True"


@pytest.mark.parametrize(
    "bad",
    [{"grid": {"branches": [1]}}, {"grid": {"n_branches": []}}, {"grid": {}}],
    ids=["unknown-key", "empty-values", "empty-grid"],
)
def test_bad_grid_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError, match=r"n_branches|at least"):
        SweepSpec.model_validate(bad)


def _sim_grid(tmp_path: Path, *, limit: int | None) -> Path:
    grid = {
        "name": "unit",
        "grid": {"n_branches": [1, 2, 4, 8], "early_stop": ["none", "beta"]},
        "simulate": {
            "traces": [str(SAMPLES)],
            "limit": limit,
            "model": {"profile": "cpu", "pool": "plain"},
        },
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


async def test_simulated_grid_on_a_sample_bank_writes_table_csv_and_png(tmp_path: Path) -> None:
    spec = load_sweep_spec(_sim_grid(tmp_path, limit=None))
    started = time.perf_counter()
    rows, facts = await run_simulated_sweep(spec)
    assert time.perf_counter() - started < 120
    assert len(rows) == 8
    assert all(r.n_problems == 100 for r in rows)
    assert facts["group_sizes"] == {8: 100}
    assert "Qwen2.5" in facts["tokenizer"]
    by_label = {r.label: r for r in rows}
    # Eight samples per problem: voting moves accuracy, and more branches cost more tokens.
    assert by_label["N=8 stop=none"].accuracy.value > by_label["N=1 stop=none"].accuracy.value
    assert by_label["N=8 stop=none"].mean_tokens > by_label["N=1 stop=none"].mean_tokens
    assert by_label["N=8 stop=beta"].mean_latency_s < by_label["N=8 stop=none"].mean_latency_s
    assert any(r.pareto_latency for r in rows)

    paths = write_sweep_outputs(
        rows, tmp_path / "out", title="unit sweep", meta={"x": 1}, note="simulated note"
    )
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC
    with paths["csv"].open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 8
    assert {row["label"] for row in table} == set(by_label)
    markdown = paths["markdown"].read_text()
    table_lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 2 + 8  # header, separator, one row per point
    assert "★" in markdown
    assert "simulated note" in markdown


def test_relative_trace_paths_resolve_against_the_grid_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "grid.yaml"
    path.write_text(
        yaml.safe_dump({"grid": {"n_branches": [1]}, "simulate": {"traces": ["../t.jsonl"]}})
    )
    spec = load_sweep_spec(path)
    assert spec.simulate is not None
    assert spec.simulate.traces == [(tmp_path / "t.jsonl").resolve()]


async def test_live_sweep_runs_one_resumable_run_per_point(
    tmp_path: Path, fake_server, exact_grader, monkeypatch
) -> None:
    fake_server.wrong = {"p2"}
    spec = SweepSpec.model_validate(
        {
            "name": "live",
            "grid": {"n_branches": [1, 2, 4]},
            "live": {"dataset": "toy.jsonl", "n": 1},
        }
    )
    dataset = tmp_path / "toy.jsonl"
    dataset.write_text(
        "".join(
            f'{{"id": "p{i}", "problem": "What is {i} + {i}?", "answer": "{2 * i}"}}\n'
            for i in range(4)
        )
    )
    monkeypatch.chdir(tmp_path)
    rows = await run_live_sweep(
        spec,
        grader=exact_grader,
        checker=None,
        runs_dir=tmp_path / "runs",
        app=fake_server.app(),
        show_progress=False,
    )
    assert [r.tts for r in rows] == [{"n_branches": n} for n in (1, 2, 4)]
    assert [r.accuracy.value for r in rows] == [0.75] * 3
    assert len({r.run_path for r in rows}) == 3
    assert sorted(b["tts"]["n_branches"] for b in fake_server.calls) == [1] * 4 + [2] * 4 + [4] * 4
