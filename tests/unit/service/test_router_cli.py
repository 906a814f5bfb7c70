from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from policies.modes import ThinkingMode
from policies.router import RouterModel
from tts_orchestrator.modes.cli import (
    RouterDataError,
    examples_from_runs,
    holdout_split,
    load_run,
    mode_of_config,
    router_app,
    sample_tokens,
)

MATH500 = Path(__file__).resolve().parents[3] / "evals" / "data" / "math500.jsonl"
WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    lines = MATH500.read_text(encoding="utf-8").splitlines()[:80]
    return [json.loads(line) for line in lines]


def write_run(
    folder: Path, name: str, records: list[dict[str, Any]], config: dict[str, Any] | None
) -> Path:
    run = folder / f"{name}.jsonl"
    run.write_text("".join(json.dumps(r) + "\n" for r in records))
    if config is not None:
        (folder / f"{name}.meta.json").write_text(json.dumps({"config": config}))
    return run


def record(pid: str, *, correct: bool, tokens: int, index: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "problem_id": pid,
        "sample_index": index,
        "gold": "1",
        "correct": correct,
        "thinking_tokens": tokens,
        "answer_tokens": 10,
        **extra,
    }


@pytest.fixture
def runs(tmp_path: Path, rows: list[dict[str, Any]]) -> tuple[Path, Path, Path]:
    """Fast and slow runs over real MATH-500 problems: levels 4-5 need slow thinking."""
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fast = [record(r["id"], correct=r["level"] < 4, tokens=0) for r in rows]
    slow = [record(r["id"], correct=True, tokens=100 * r["level"]) for r in rows]
    base = {"dataset": str(problems), "model": "m"}
    fast_run = write_run(tmp_path, "math-fast", fast, {**base, "tts": {"mode": "fast"}})
    slow_run = write_run(
        tmp_path, "math-slow", slow, {**base, "extra_body": {"reasoning_effort": "high"}}
    )
    return fast_run, slow_run, problems


@pytest.mark.parametrize(
    ("config", "mode"),
    [
        ({"tts": {"mode": "fast"}}, ThinkingMode.FAST),
        ({"tts": {"mode": "slow"}, "extra_body": {"reasoning_effort": "low"}}, ThinkingMode.SLOW),
        ({"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}}, ThinkingMode.FAST),
        ({"extra_body": {"reasoning_effort": "low"}}, ThinkingMode.FAST),
        ({"extra_body": {"reasoning_effort": "medium"}}, ThinkingMode.SLOW),
    ],
    ids=["tts-mode", "tts-mode-beats-effort", "template-flag", "effort-low", "effort-medium"],
)
def test_mode_of_an_eval_config(config: dict[str, Any], mode: ThinkingMode) -> None:
    assert mode_of_config(config) is mode


@pytest.mark.parametrize(
    ("config", "message"),
    [({}, "sets no tts.mode"), ({"tts": {"mode": "auto"}}, "auto run mixes modes")],
    ids=["none", "auto"],
)
def test_runs_without_one_mode_are_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(RouterDataError, match=message):
        mode_of_config(config)


def test_load_run_keeps_the_latest_successful_record_per_sample(tmp_path: Path) -> None:
    records = [
        record("a", correct=False, tokens=5, error="timeout"),
        record("a", correct=True, tokens=7),
        record("b", correct=True, tokens=1, error="boom"),
    ]
    run = write_run(tmp_path, "r", records, {"tts": {"mode": "slow"}})
    with run.open("a") as handle:
        handle.write('{"problem_id": "c", "sample_')  # torn by a kill
    loaded = load_run(run)
    assert loaded.mode is ThinkingMode.SLOW
    assert [(s.problem_id, sample_tokens(s)) for s in loaded.samples] == [("a", 17)]


def test_load_run_needs_a_mode(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", [record("a", correct=True, tokens=1)], None)
    with pytest.raises(RouterDataError, match="pass --mode"):
        load_run(run)
    assert load_run(run, mode=ThinkingMode.FAST).mode is ThinkingMode.FAST


def test_pairing_uses_the_majority_of_samples_and_mean_tokens(tmp_path: Path) -> None:
    fast = [
        record("p", correct=True, tokens=10, index=0),
        record("p", correct=False, tokens=30, index=1),
        record("q", correct=False, tokens=0),
        record("only-fast", correct=True, tokens=0),
    ]
    slow = [record("p", correct=True, tokens=100), record("q", correct=True, tokens=200)]
    runs = [
        load_run(write_run(tmp_path, "f", fast, {"tts": {"mode": "fast"}})),
        load_run(write_run(tmp_path, "s", slow, {"tts": {"mode": "slow"}})),
    ]
    examples, ids = examples_from_runs(runs, {"p": "P?", "q": "Q?", "only-fast": "F?"})
    assert ids == ["p", "q"]
    p, q = examples
    assert (p.solved_fast, p.tokens_fast, p.needs_slow) == (True, 30.0, False)
    assert (q.solved_fast, q.solved_slow, q.tokens_slow, q.needs_slow) == (False, True, 210, True)


def test_pairing_needs_both_modes_and_every_problem_text(tmp_path: Path) -> None:
    fast = load_run(
        write_run(tmp_path, "f", [record("p", correct=True, tokens=1)], {"tts": {"mode": "fast"}})
    )
    with pytest.raises(RouterDataError, match="one fast run and one slow run"):
        examples_from_runs([fast], {"p": "P?"})
    slow = fast.model_copy(update={"mode": ThinkingMode.SLOW})
    with pytest.raises(RouterDataError, match="1 problems have no text"):
        examples_from_runs([fast, slow], {})


def test_holdout_split_is_deterministic_and_near_the_fraction() -> None:
    ids = [f"test/algebra/{i}.json" for i in range(1000)]
    train, held = holdout_split(ids, 0.2)
    assert (train, held) == holdout_split(list(ids), 0.2)
    assert sorted(train + held) == list(range(1000))
    assert 150 < len(held) < 250


def test_fit_learns_which_problems_need_slow_thinking(
    runs: tuple[Path, Path, Path], tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    fast_run, slow_run, _ = runs
    out = tmp_path / "router.json"
    args = ["fit", "--logs", str(fast_run), "--logs", str(slow_run), "--out", str(out)]
    result = CliRunner().invoke(router_app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    needs = sum(r["level"] >= 4 for r in rows)
    assert f"{len(rows)} problems in both modes; {needs} needed slow thinking" in result.output
    assert "held-out problems" in result.output
    assert "← routed" in result.output
    assert "all slow" in result.output
    assert "all fast" in result.output
    model = RouterModel.load(out)
    assert model.trained_on == len(rows)
    hard = model.scores([r["problem"] for r in rows if r["level"] >= 4]).mean()
    easy = model.scores([r["problem"] for r in rows if r["level"] < 4]).mean()
    assert hard > easy


def test_fit_reports_bad_logs_without_a_traceback(
    runs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    fast_run, _, _ = runs
    args = ["fit", "--logs", str(fast_run), "--out", str(tmp_path / "m.json")]
    result = CliRunner().invoke(router_app, args, env=WIDE)
    assert result.exit_code == 1
    assert "error: need at least one fast run and one slow run" in result.output
    assert not (tmp_path / "m.json").exists()


def test_fit_levels_fits_the_proxy_model(runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, _, problems = runs
    out = tmp_path / "proxy.json"
    args = ["fit-levels", "--problems", str(problems), "--out", str(out), "--holdout", "0"]
    result = CliRunner().invoke(router_app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert "level ≥ 4 needs slow thinking" in result.output
    assert "fitting data (optimistic)" in result.output
    assert RouterModel.load(out).trained_on == 80


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["What is 2 + 2?", "--mode", "fast"], ["mode: fast", "tts.mode=fast requested"]),
        (["What is 2 + 2?"], ["stage: router", "stage 1: P(needs slow)=", "log_chars"]),
        (
            ["Hi", "--family", "qwen3", "--effort", "high"],
            ["mode: slow", "8192 tokens", "enable_thinking=True"],
        ),
        (["Hi", "--family", "openpangu"], ["mode: auto", "trained auto mode", "/auto_think"]),
    ],
    ids=["explicit", "routed", "effort", "native-auto"],
)
def test_decide_prints_the_decision_and_its_reasons(args: list[str], expected: list[str]) -> None:
    result = CliRunner().invoke(router_app, ["decide", *args], env=WIDE)
    assert result.exit_code == 0, result.output
    for text in expected:
        assert text in result.output


def test_decide_with_an_unknown_family_fails_listing_the_known_ones() -> None:
    result = CliRunner().invoke(router_app, ["decide", "Hi", "--family", "llama9"], env=WIDE)
    assert result.exit_code == 1
    assert "known:" in result.output
