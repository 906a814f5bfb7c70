import json
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from evals.cli import eval_app, sweep_app
from evals.records import RunStore, SampleRecord

TRACES = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"


def test_import_has_no_heavy_side_effects() -> None:
    code = (
        "import sys, evals.cli; "
        "print(sorted(m for m in ('matplotlib.pyplot', 'verifiers.grading', 'math_verify') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sweep_run_simulate_writes_outputs(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        yaml.safe_dump(
            {
                "name": "cli",
                "grid": {"n_branches": [1, 2], "trim": [False, True]},
                "simulate": {
                    "traces": [
                        str(TRACES / "thought-anchors_deepseek-r1-distill-llama-8b_math.jsonl")
                    ]
                },
            }
        )
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(sweep_app, ["run", str(grid), "--simulate", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {
        "pareto.md",
        "pareto.csv",
        "pareto.png",
        "sweep.json",
    }
    meta = json.loads((out / "sweep.json").read_text())
    assert meta["simulated"] is True
    assert len(meta["rows"]) == 4


def test_sweep_run_reports_bad_grid(tmp_path: Path) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"grid": {"n_branch": [1]}}))
    result = CliRunner().invoke(sweep_app, ["run", str(grid), "--simulate"])
    assert result.exit_code != 0
    assert "n_branches" in result.output


def _run_file(path: Path, verdicts: list[bool]) -> Path:
    RunStore(path).append(
        SampleRecord(problem_id=f"p{i}", sample_index=0, gold="1", correct=ok, answer="1")
        for i, ok in enumerate(verdicts)
    )
    return path


def test_eval_compare_prints_paired_difference(tmp_path: Path) -> None:
    a = _run_file(tmp_path / "a.jsonl", [True, True, True, False])
    b = _run_file(tmp_path / "b.jsonl", [True, False, False, False])
    result = CliRunner().invoke(eval_app, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    assert "+50.0 pts" in result.output


def test_eval_run_rejects_bad_tts_json() -> None:
    result = CliRunner().invoke(eval_app, ["run", "aime24", "--limit", "1", "--tts", "{nope"])
    assert result.exit_code != 0
    assert "not JSON" in result.output
