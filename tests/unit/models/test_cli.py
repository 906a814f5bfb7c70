from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tts_orchestrator.models.catalog import BUILTIN_MODELS
from tts_orchestrator.models.cli import models_app

WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}


def test_list_shows_every_model_as_not_installed_in_an_empty_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(models_app, ["list", "--models-dir", str(tmp_path)], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "instruct" in line]
    assert len(rows) == len(BUILTIN_MODELS)
    for model, row in zip(BUILTIN_MODELS, rows, strict=True):
        assert model.name in row
        assert " no " in row


def test_pull_of_an_unknown_name_fails_listing_the_catalog(tmp_path: Path) -> None:
    result = CliRunner().invoke(models_app, ["pull", "gpt-17", "--models-dir", str(tmp_path)])
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "unknown model 'gpt-17'" in flat
    for model in BUILTIN_MODELS:
        assert model.name in flat


def test_no_arguments_prints_help() -> None:
    result = CliRunner().invoke(models_app, [])
    assert "pull" in result.output
    assert "list" in result.output
