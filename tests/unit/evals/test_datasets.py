import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from evals.datasets import (
    BuiltinDataset,
    DatasetError,
    ProblemFilter,
    dataset_label,
    load_builtin,
    load_dataset,
    load_jsonl,
)
from evals.presets import (
    PROMPT_PRESETS,
    SAMPLING_PRESETS,
    PromptPresetName,
    SamplingPresetName,
)

DATA = resources.files("evals.data")
WriteJsonl = Callable[[str, list[dict[str, Any]]], Path]


def _readme_checksums() -> dict[str, str]:
    readme = DATA.joinpath("README.md").read_text(encoding="utf-8")
    rows = re.findall(r"\| `([\w.]+\.jsonl)` \| (\d+) \| `([0-9a-f]{64})` \|", readme)
    return {name: sha for name, _, sha in rows}


def test_readme_lists_every_packaged_file() -> None:
    assert set(_readme_checksums()) == {d.filename for d in BuiltinDataset}


@pytest.mark.parametrize("dataset", list(BuiltinDataset), ids=str)
def test_packaged_file_matches_readme_sha256(dataset: BuiltinDataset) -> None:
    data = DATA.joinpath(dataset.filename).read_bytes()
    assert hashlib.sha256(data).hexdigest() == _readme_checksums()[dataset.filename]


@pytest.mark.parametrize(
    ("dataset", "count", "first_id"),
    [
        (BuiltinDataset.MATH500, 500, "test/precalculus/807.json"),
        (BuiltinDataset.AIME24, 30, "2024-I-1"),
        (BuiltinDataset.AIME25, 30, "2025-I-1"),
        (BuiltinDataset.GSM8K, 388, "gsm8k/0"),
    ],
    ids=str,
)
def test_builtin_loads_typed_records(dataset: BuiltinDataset, count: int, first_id: str) -> None:
    problems = load_builtin(dataset)
    assert len(problems) == count
    assert problems[0].id == first_id
    assert len({p.id for p in problems}) == count


def test_math500_levels_and_subjects_match_readme() -> None:
    problems = load_builtin(BuiltinDataset.MATH500)
    assert Counter(p.level for p in problems) == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}
    assert Counter(p.subject for p in problems)["Intermediate Algebra"] == 97


def test_gsm8k_agrees_with_the_traces_it_was_taken_from() -> None:
    traces = DATA.joinpath("traces", "mip_qwq-32b_gsm8k.jsonl").read_text(encoding="utf-8")
    rows = {r["problem_id"]: r for r in map(json.loads, traces.splitlines())}
    problems = load_builtin(BuiltinDataset.GSM8K)
    assert {p.id for p in problems} == set(rows)
    assert all(
        (p.problem, p.answer) == (rows[p.id]["problem"], rows[p.id]["ground_truth"])
        for p in problems
    )


def test_aime_answers_are_integers_without_level() -> None:
    problems = load_builtin(BuiltinDataset.AIME25)
    assert all(p.answer.isdigit() and p.level is None for p in problems)


@pytest.mark.parametrize(
    ("problem_filter", "expected_ids"),
    [
        (ProblemFilter(limit=2), ["a", "b"]),
        (ProblemFilter(start=1, limit=2), ["b", "c"]),
        (ProblemFilter(levels=(2,)), ["b", "d"]),
        (ProblemFilter(subjects=("GEOMETRY",)), ["c", "d"]),
        (ProblemFilter(levels=(2,), subjects=("geometry",)), ["d"]),
        (ProblemFilter(ids=("d", "a")), ["a", "d"]),
        (ProblemFilter.from_slice("1:3"), ["b", "c"]),
        (ProblemFilter.from_slice("2:"), ["c", "d"]),
        (ProblemFilter.from_slice(":1", levels=(2,)), ["b"]),
    ],
    ids=["limit", "start", "level", "subject", "level+subject", "ids", "slice", "open", "kw"],
)
def test_filter_selects(
    write_jsonl: WriteJsonl, problem_filter: ProblemFilter, expected_ids: list[str]
) -> None:
    path = write_jsonl(
        "user.jsonl",
        [
            {"id": "a", "problem": "1+1", "answer": 2, "level": 1, "subject": "Algebra"},
            {"id": "b", "problem": "2+2", "answer": "4", "level": 2, "subject": "Algebra"},
            {"id": "c", "problem": "3+3", "answer": "6", "level": 1, "subject": "Geometry"},
            {"id": "d", "problem": "4+4", "answer": "8", "level": 2, "subject": "Geometry"},
        ],
    )
    assert [p.id for p in problem_filter.apply(load_jsonl(path))] == expected_ids


def test_user_jsonl_coerces_numbers_and_ignores_extra_fields(write_jsonl: WriteJsonl) -> None:
    path = write_jsonl("mine.jsonl", [{"id": 7, "problem": "x?", "answer": 42, "source": "me"}])
    (problem,) = load_dataset(str(path))
    assert (problem.id, problem.answer, problem.level) == ("7", "42", None)
    assert dataset_label(str(path)) == "mine"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "a", "problem": "p", "answer": "1"}] * 2, "duplicate id"),
        ([{"id": "a", "problem": "p"}], "answer"),
        ([{"id": "a", "problem": "", "answer": "1"}], "problem"),
        ([], "no problems"),
    ],
    ids=["duplicate", "missing-answer", "empty-problem", "empty-file"],
)
def test_bad_user_jsonl_is_rejected(
    write_jsonl: WriteJsonl, rows: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(DatasetError, match=message):
        load_jsonl(write_jsonl("bad.jsonl", rows))


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(DatasetError, match="math500, aime24, aime25, gsm8k"):
        load_dataset("gsm9k")


@pytest.mark.parametrize("text", ["20", "5:2", "a:b", "-1:3"], ids=str)
def test_bad_slice_is_rejected(text: str) -> None:
    with pytest.raises(DatasetError):
        ProblemFilter.from_slice(text)


def test_boxed_prompt_puts_instruction_after_problem() -> None:
    problem = load_builtin(BuiltinDataset.AIME24)[0]
    messages = PROMPT_PRESETS[PromptPresetName.BOXED].messages(problem)
    assert messages == [
        {
            "role": "user",
            "content": problem.problem
            + "\nPlease reason step by step, and put your final answer within \\boxed{}.",
        }
    ]
    system = PROMPT_PRESETS[PromptPresetName.BOXED_SYSTEM].messages(problem)
    assert [m["role"] for m in system] == ["system", "user"]
    assert system[1]["content"] == problem.problem


@pytest.mark.parametrize(
    ("name", "index", "expected"),
    [
        (SamplingPresetName.REASONING, 0, {"temperature": 0.6, "top_p": 0.95}),
        (SamplingPresetName.GREEDY, 3, {"temperature": 0.0, "top_p": 1.0}),
    ],
    ids=str,
)
def test_sampling_presets(name: SamplingPresetName, index: int, expected: dict[str, float]) -> None:
    assert SAMPLING_PRESETS[name].body(sample_index=index) == expected


def test_sampling_seed_differs_per_sample() -> None:
    preset = SAMPLING_PRESETS[SamplingPresetName.REASONING].model_copy(
        update={"seed": 10, "max_tokens": 512}
    )
    assert preset.body(sample_index=2) == {
        "temperature": 0.6,
        "top_p": 0.95,
        "max_tokens": 512,
        "seed": 12,
    }
