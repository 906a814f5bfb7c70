"""`tts-orchestrator trim-replay` on the shipped R1-distill traces: the replay table and the
oracle bound a perfect judge could reach."""

from __future__ import annotations

import re

import typer
from typer.testing import CliRunner

from tts_orchestrator.trim.cli import trim_replay


def test_trim_replay_reports_the_table_and_the_oracle_bounds() -> None:
    app = typer.Typer()
    app.command()(trim_replay)  # the only command: invoked without its name
    result = CliRunner().invoke(app, ["--datasets", "math_hendrycks"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "TrimR replay over 40 traces (rule judge)" in result.output
    bounds = re.findall(
        r"mention (\d) of the final answer \(overthink M = (\d)\): ([\d.]+)% saved", result.output
    )
    assert [(int(n), int(m)) for n, m, _ in bounds] == [(1, 0), (2, 1), (3, 2)]
    saved = [float(s) for _, _, s in bounds]
    # Requiring more agreeing thoughts can only stop later.
    assert saved[0] > saved[1] > saved[2] > 0


def _invoke(*args: str) -> str:
    app = typer.Typer()
    app.command()(trim_replay)
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_trim_replay_json_has_the_acceptance_fields_per_row() -> None:
    import json

    summary = json.loads(_invoke("--datasets", "math_hendrycks", "--json"))
    pooled = summary["pooled"]
    assert pooled["traces"] == 40
    assert pooled["thinking_tokens_after"] <= pooled["thinking_tokens_before"]
    assert set(pooled["per_rule"]) == {"overthinking", "underthinking", "repetition"}
    for name in ("accuracy_before", "accuracy_after", "lost", "gained", "oracle_saved_pct"):
        assert name in pooled
    assert set(summary["families"]) == {"deepseek_r1"}  # both thought-anchors models
    assert sum(g["traces"] for g in summary["groups"].values()) == 40


def test_trim_replay_splits_partition_the_traces() -> None:
    import json

    sizes = [
        json.loads(_invoke("--datasets", "math_hendrycks", "--json", "--split", s))["pooled"][
            "traces"
        ]
        for s in ("train", "heldout")
    ]
    assert sum(sizes) == 40
    assert all(sizes)
