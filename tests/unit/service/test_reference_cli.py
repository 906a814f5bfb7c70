"""`tts-orchestrator reference-profiles write | check | show`."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from policies.reference import reference_names
from tts_orchestrator.planning.reference_cli import reference_app, stale_references


def test_shipped_files_are_up_to_date() -> None:
    result = CliRunner().invoke(reference_app, ["check"])
    assert result.exit_code == 0, result.output


def test_write_then_check_and_a_changed_file_is_stale(tmp_path: Path) -> None:
    assert CliRunner().invoke(reference_app, ["write", "--dir", str(tmp_path)]).exit_code == 0
    assert sorted(p.stem for p in tmp_path.glob("*.json")) == reference_names()
    assert stale_references(tmp_path) == []
    path = tmp_path / "h100-7b.json"
    path.write_text(path.read_text().replace('"max_concurrency": 60', '"max_concurrency": 61'))
    result = CliRunner().invoke(reference_app, ["check", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "h100-7b" in result.output


def test_show_prints_the_roofline_breakdown_or_the_measured_points() -> None:
    gpu = CliRunner().invoke(reference_app, ["show", "h100-7b"])
    assert gpu.exit_code == 0
    assert "knee B*" in gpu.output
    assert "memory" in gpu.output
    cpu = CliRunner().invoke(reference_app, ["show", "cpu-measured"])
    assert cpu.exit_code == 0
    assert "MEASURED" in cpu.output
    assert "56.3" in cpu.output
    assert CliRunner().invoke(reference_app, ["show", "nope"]).exit_code == 2
