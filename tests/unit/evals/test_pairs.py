"""Pair files joined by problem_id; bad pairs are clear errors naming the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evals.pairs import PairDataError, count_tokens, load_ladder, same_answer
from tts_orchestrator.modes.cli import router_app

WIDE = {"COLUMNS": "400", "NO_COLOR": "1"}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def fast_row(pid: str, problem: str, output: str, correct: bool) -> dict[str, Any]:
    return {
        "problem_id": pid,
        "problem": problem,
        "model": "Fast",
        "output": output,
        "is_correct": correct,
        "thinking_delimiters": None,
    }


def slow_row(pid: str, problem: str, thinking: str, answer: str, correct: bool) -> dict[str, Any]:
    return {
        "problem_id": pid,
        "problem": problem,
        "model": "Slow",
        "output": f"{thinking}</think>\n\n{answer}",
        "is_correct": correct,
        "thinking_delimiters": ["<think>", "</think>"],
        "prompt_ends_with_think_tag": True,
    }


def test_ladder_joins_on_problem_id_and_sees_what_a_service_sees(tmp_path: Path) -> None:
    fast = write(
        tmp_path / "fast.jsonl",
        [
            fast_row("p/2", "Two?", "It is \\boxed{2}.", True),
            fast_row("p/1", "One?", "Probably 7.", False),
            fast_row("p/9", "Only fast?", "9", True),
        ],
    )
    slow = write(
        tmp_path / "slow.jsonl",
        [
            slow_row("p/1", "One?", "hmm " * 50, "So \\boxed{1}.", True),
            slow_row("p/2", "Two?", "ok", "\\boxed{2}", True),
        ],
    )
    ladder = load_ladder(fast, [slow])
    assert ladder.levels == ("Fast", "Slow")
    assert ladder.dropped == 1
    assert [p.problem_id for p in ladder.problems] == ["p/1", "p/2"]
    one = ladder.problems[0]
    assert one.answers[0].answer is None
    assert one.answers[0].correct is False
    thinker = one.answers[1]
    assert (thinker.text.strip(), thinker.answer, thinker.thinking_chars) == (
        "So \\boxed{1}.",
        "1",
        200,
    )
    assert thinker.tokens == count_tokens("hmm " * 50 + "</think>\n\nSo \\boxed{1}.")


def test_tokens_are_counted_by_the_qwen25_tokenizer() -> None:
    assert (count_tokens(""), count_tokens("Hello world")) == (0, 2)  # Qwen2.5: [9707, 1879]


def test_mismatched_problems_name_both_files(tmp_path: Path) -> None:
    fast = write(tmp_path / "fast.jsonl", [fast_row("p/1", "One?", "1", True)])
    slow = write(tmp_path / "slow.jsonl", [slow_row("p/1", "A different one?", "", "1", True)])
    with pytest.raises(PairDataError, match="different text") as err:
        load_ladder(fast, [slow])
    assert str(fast) in str(err.value)
    assert str(slow) in str(err.value)


def test_no_overlap_names_the_files(tmp_path: Path) -> None:
    fast = write(tmp_path / "fast.jsonl", [fast_row("gsm8k/1", "One?", "1", True)])
    slow = write(tmp_path / "slow.jsonl", [slow_row("math/1", "One?", "", "1", True)])
    with pytest.raises(PairDataError, match="no problem_id occurs in every file") as err:
        load_ladder(fast, [slow])
    assert str(fast) in str(err.value)
    assert str(slow) in str(err.value)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"problem_id": "a"}'], "missing \\['problem', 'output', 'is_correct'\\]"),
        (["not json"], "not JSON"),
        ([json.dumps(fast_row("a", "A?", "1", True))] * 2, "occurs twice"),
        ([], "no records"),
    ],
    ids=["missing-fields", "not-json", "duplicate-id", "empty"],
)
def test_unreadable_pair_files_are_named(tmp_path: Path, lines: list[str], message: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    good = write(tmp_path / "slow.jsonl", [slow_row("a", "A?", "", "1", True)])
    with pytest.raises(PairDataError, match=message) as err:
        load_ladder(bad, [good])
    assert str(bad) in str(err.value)


def test_the_cli_reports_bad_pairs_as_an_error_naming_the_files(tmp_path: Path) -> None:
    fast = write(tmp_path / "fast.jsonl", [fast_row("p/1", "One?", "1", True)])
    slow = write(tmp_path / "slow.jsonl", [slow_row("p/1", "Another?", "", "1", True)])
    result = CliRunner().invoke(
        router_app, ["evaluate", "--fast", str(fast), "--slow", str(slow)], env=WIDE
    )
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "error:" in flat
    assert "fast.jsonl" in flat
    assert "slow.jsonl" in flat


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [("2", "2", True), ("\\frac{1}{2}", "0.5", True), ("2", "3", False), (None, "2", False)],
    ids=["equal", "equivalent", "different", "missing"],
)
def test_same_answer(a: str | None, b: str | None, same: bool) -> None:
    assert same_answer(a, b) is same


def test_a_ladder_restricted_to_some_problems(tmp_path: Path) -> None:
    rows = [fast_row(f"p/{i}", f"{i}?", f"\\boxed{{{i}}}", True) for i in range(3)]
    slow = [slow_row(f"p/{i}", f"{i}?", "hm", f"\\boxed{{{i}}}", True) for i in range(3)]
    ladder = load_ladder(write(tmp_path / "f.jsonl", rows), [write(tmp_path / "s.jsonl", slow)])
    assert [p.problem_id for p in ladder.only(["p/2", "p/0", "nope"]).problems] == ["p/0", "p/2"]
