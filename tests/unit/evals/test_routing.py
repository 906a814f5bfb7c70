"""Auto vs always-fast / always-slow / oracle on a ladder; auto never reads a label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evals.pairs import Ladder, load_ladder
from evals.routing import evaluate, examples_of, fit_policy, outcomes_of, probed, run_auto
from policies.auto import AutoPolicy
from policies.router import RouterModel
from tests.unit.evals.test_pairs import fast_row, slow_row, write
from tts_orchestrator.modes.cli import router_app


def files(folder: Path, n: int = 60) -> tuple[Path, Path]:
    """Fast answers that hedge are wrong (every third); the thinker is always right."""
    fast, slow = [], []
    for i in range(n):
        pid, problem = f"toy/{i}", f"Sam has {i + 3} apples and eats 2. How many are left?"
        if i % 3 == 0:
            fast.append(
                fast_row(pid, problem, f"Probably about {i + 9}, assuming none rot.", False)
            )
        else:
            fast.append(fast_row(pid, problem, f"So he has \\boxed{{{i + 1}}} left.", True))
        slow.append(slow_row(pid, problem, "Let me think. " * 40, f"\\boxed{{{i + 1}}}", True))
    return write(folder / "fast.jsonl", fast), write(folder / "slow.jsonl", slow)


@pytest.fixture
def ladder(tmp_path: Path) -> Ladder:
    return load_ladder(*files(tmp_path)[:1], [files(tmp_path)[1]])


def test_arms_and_cross_validated_auto(ladder: Ladder) -> None:
    report = evaluate(ladder, folds=3, max_accuracy_drop=0.0)
    n = len(ladder.problems)
    fast_tokens = sum(p.answers[0].tokens for p in ladder.problems) / n
    slow_tokens = sum(p.answers[1].tokens for p in ladder.problems) / n
    assert report.cross_validated
    assert report.folds == 3
    assert report.problems == n
    assert report.fast.accuracy == pytest.approx(2 / 3)
    assert report.fast.mean_tokens == pytest.approx(fast_tokens)
    assert (report.slow.accuracy, report.slow.tokens_vs_slow) == (1.0, 0.0)
    oracle = (
        sum(
            p.answers[0].tokens if p.answers[0].correct else p.answers[1].tokens
            for p in ladder.problems
        )
        / n
    )
    assert (report.oracle.accuracy, report.oracle.mean_tokens) == (1.0, pytest.approx(oracle))
    # the hedged answers are caught: auto is as right as slow and far cheaper
    assert report.auto.accuracy == 1.0
    assert report.auto.mean_tokens == pytest.approx(fast_tokens + slow_tokens / 3)
    assert report.decisions.stage3 == {"Fast: kept": 40, "Fast: escalated": 20}
    assert report.acceptance.passed


def test_auto_decisions_never_read_the_labels(ladder: Ladder) -> None:
    examples = examples_of(ladder)
    ids = [p.problem_id for p in ladder.problems]
    policy = fit_policy(ladder.levels, examples, ids, folds=3, max_accuracy_drop=0.0)
    for problem, example in zip(ladder.problems, examples, strict=True):
        flipped = example.model_copy(update={"correct": tuple(not c for c in example.correct)})
        a, b = run_auto(policy, problem, example), run_auto(policy, problem, flipped)
        assert (a.trail, a.answered_by, a.tokens) == (b.trail, b.answered_by, b.tokens)
        assert a.correct is not b.correct


def test_cli_evaluate_json_has_the_issue_fields(tmp_path: Path) -> None:
    fast, slow = files(tmp_path)
    result = CliRunner().invoke(
        router_app,
        ["evaluate", "--fast", str(fast), "--slow", str(slow), "--folds", "3", "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for arm in ("fast", "slow", "auto", "oracle"):
        assert 0.0 <= report[arm]["accuracy"] <= 1.0
        assert report[arm]["mean_tokens"] > 0
    assert report["cross_validated"] is True
    assert "Qwen2.5" in report["tokens_note"]


def test_a_cascade_escalates_level_by_level(tmp_path: Path) -> None:
    fast, slow = files(tmp_path)
    ladder = load_ladder(fast, [slow, slow])
    report = evaluate(ladder, folds=3, max_accuracy_drop=0.0)
    assert set(report.thinkers) == {"Slow"}
    assert report.auto.accuracy == 1.0
    # the middle level is always right, so nothing needs the deepest
    assert report.decisions.answered_by.get("Fast", 0) == 40


def test_cli_fit_from_pairs_writes_auto_and_the_services_stage1(tmp_path: Path) -> None:
    fast, slow = files(tmp_path)
    out, stage1 = tmp_path / "auto.json", tmp_path / "router.json"
    args = ["fit", "--pair", f"{fast},{slow}", "--out", str(out), "--stage1-out", str(stage1)]
    result = CliRunner().invoke(router_app, [*args, "--folds", "3"])
    assert result.exit_code == 0, result.output
    policy = AutoPolicy.model_validate_json(out.read_text())
    router = RouterModel.load(stage1)
    assert policy.trained_on == 60
    assert router.weights == policy.stage1.weights
    assert router.thresholds.fast_below == 0.0
    # the fitted policy replays to the same result as cross-validation promised
    report = evaluate(load_ladder(fast, [slow]), policy=policy)
    assert not report.cross_validated
    assert report.auto.accuracy == 1.0


def test_cli_fit_needs_exactly_one_source(tmp_path: Path) -> None:
    fast, slow = files(tmp_path)
    neither = CliRunner().invoke(router_app, ["fit", "--out", str(tmp_path / "m.json")])
    both = CliRunner().invoke(
        router_app,
        ["fit", "--logs", str(fast), "--pair", f"{fast},{slow}", "--out", str(tmp_path / "m")],
    )
    for result in (neither, both):
        assert result.exit_code == 1
        assert "either --logs" in result.output


def test_auto_reads_the_probe_the_service_would_cut(tmp_path: Path) -> None:
    """A runaway fast answer: auto pays and reads only the probe's cap, always-fast all of it."""
    fast, slow = files(tmp_path, n=30)
    rows = [json.loads(line) for line in fast.read_text().splitlines()]
    rows[1]["output"] = "Let me see. " * 400 + "So he has \\boxed{2} left."
    write(fast, rows)
    ladder = load_ladder(fast, [slow])
    whole = ladder.problems[1].answers[0]
    assert (whole.answer, whole.correct) == ("2", True)
    probe = probed(ladder.problems[1], 64).answers[0]
    assert probe.tokens == 64
    assert (probe.answer, probe.correct) == (None, False)
    assert probed(ladder.problems[2], 64) == ladder.problems[2]  # short answers are whole
    report = evaluate(ladder, folds=3, max_accuracy_drop=0.0, probe_max_tokens=64)
    n = len(ladder.problems)
    assert report.fast.mean_tokens == pytest.approx(
        sum(p.answers[0].tokens for p in ladder.problems) / n
    )
    assert report.auto.mean_tokens < report.fast.mean_tokens + report.slow.mean_tokens / 3


def test_a_fast_answer_its_own_text_refutes_is_flagged(tmp_path: Path) -> None:
    fast, slow = files(tmp_path, n=6)
    rows = [json.loads(line) for line in fast.read_text().splitlines()]
    rows[1]["output"] = "So \\(a = \\frac{2016}{128} = 15\\), and he has \\boxed{15} left."
    write(fast, rows)
    examples = examples_of(load_ladder(fast, [slow]))
    assert examples[1].signals[0]["claims_refuted"] == 1.0
    assert examples[2].signals[0]["claims_refuted"] == 0.0


def test_outcomes_of_runs_every_problem_as_the_service_would(ladder: Ladder) -> None:
    examples = examples_of(ladder)
    policy = fit_policy(ladder.levels, examples, [p.problem_id for p in ladder.problems], folds=3)
    outcomes = outcomes_of(policy, ladder)
    assert list(outcomes) == [p.problem_id for p in ladder.problems]
    for p, e in zip(ladder.problems, examples, strict=True):
        assert outcomes[p.problem_id] == run_auto(policy, p, e)
