"""Benchmark problems as typed records: the packaged MATH-500 / AIME / GSM8K sets and user JSONL
files.

The packaged files live in ``evals/data`` (attribution and checksums in its README) and are read
through :mod:`importlib.resources`, so they work from an installed wheel as well as a checkout.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "BuiltinDataset",
    "DatasetError",
    "Problem",
    "ProblemFilter",
    "dataset_label",
    "load_builtin",
    "load_dataset",
    "load_jsonl",
]


class DatasetError(ValueError):
    """A dataset name, file or row that cannot be loaded."""


class Problem(BaseModel):
    """One benchmark problem with its reference answer."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, description="Stable id, unique within its dataset.")
    problem: str = Field(min_length=1, description="Problem statement as given to the model.")
    answer: str = Field(min_length=1, description="Reference final answer (LaTeX or integer).")
    subject: str | None = Field(default=None, description="MATH subject, if known.")
    level: int | None = Field(default=None, ge=1, le=5, description="MATH difficulty 1-5.")

    @field_validator("id", "answer", mode="before")
    @classmethod
    def _coerce_to_str(cls, value: object) -> object:
        # User files often store AIME answers and numeric ids as JSON numbers.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value


class BuiltinDataset(enum.StrEnum):
    """Datasets packaged with the project."""

    MATH500 = "math500"
    AIME24 = "aime24"
    AIME25 = "aime25"
    GSM8K = "gsm8k"

    @property
    def filename(self) -> str:
        return f"{self.value}.jsonl"


def _parse_rows(lines: Iterable[str], *, source: str) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            problem = Problem.model_validate(row)
        except (json.JSONDecodeError, ValueError) as exc:
            raise DatasetError(f"{source}:{number}: {exc}") from exc
        if problem.id in seen:
            raise DatasetError(f"{source}:{number}: duplicate id {problem.id!r}")
        seen.add(problem.id)
        problems.append(problem)
    if not problems:
        raise DatasetError(f"{source}: no problems")
    return problems


def load_builtin(dataset: BuiltinDataset) -> list[Problem]:
    """Load one packaged dataset in file order."""
    text = resources.files("evals.data").joinpath(dataset.filename).read_text(encoding="utf-8")
    return _parse_rows(text.splitlines(), source=dataset.filename)


def load_jsonl(path: Path) -> list[Problem]:
    """Load a user JSONL file with at least ``id``, ``problem`` and ``answer`` per line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from exc
    return _parse_rows(text.splitlines(), source=str(path))


def load_dataset(name_or_path: str) -> list[Problem]:
    """Load a packaged dataset by name, or else a JSONL file by path."""
    try:
        return load_builtin(BuiltinDataset(name_or_path))
    except ValueError:
        pass
    path = Path(name_or_path)
    if path.suffix == ".jsonl" and path.exists():
        return load_jsonl(path)
    valid = ", ".join(d.value for d in BuiltinDataset)
    raise DatasetError(f"unknown dataset {name_or_path!r}: use one of {valid} or a .jsonl path")


def dataset_label(name_or_path: str) -> str:
    """Short name for file names and reports: the builtin name or the file stem."""
    try:
        return BuiltinDataset(name_or_path).value
    except ValueError:
        return Path(name_or_path).stem


class ProblemFilter(BaseModel):
    """Selects a subset of a dataset: level / subject filters first, then a slice."""

    model_config = ConfigDict(frozen=True)

    levels: tuple[int, ...] = Field(default=(), description="Keep these levels (empty: all).")
    subjects: tuple[str, ...] = Field(
        default=(), description="Keep these subjects, case-insensitive (empty: all)."
    )
    ids: tuple[str, ...] = Field(default=(), description="Keep these ids (empty: all).")
    start: int = Field(default=0, ge=0, description="First index of the slice after filtering.")
    limit: int | None = Field(default=None, ge=1, description="Maximum number of problems.")

    @classmethod
    def from_slice(cls, text: str, **kwargs: object) -> ProblemFilter:
        """Build from a ``start:stop`` slice string such as ``"0:20"`` or ``"100:"``."""
        start_text, sep, stop_text = text.partition(":")
        if not sep:
            raise DatasetError(f"slice {text!r} must look like 'start:stop'")
        try:
            start = int(start_text) if start_text.strip() else 0
            stop = int(stop_text) if stop_text.strip() else None
        except ValueError as exc:
            raise DatasetError(f"slice {text!r} must contain integers") from exc
        if start < 0 or (stop is not None and stop <= start):
            raise DatasetError(f"slice {text!r} must satisfy 0 <= start < stop")
        limit = None if stop is None else stop - start
        return cls.model_validate({**kwargs, "start": start, "limit": limit})

    def apply(self, problems: Sequence[Problem]) -> list[Problem]:
        subjects = {s.casefold() for s in self.subjects}
        ids = set(self.ids)
        kept = [
            p
            for p in problems
            if (not self.levels or p.level in self.levels)
            and (not subjects or (p.subject or "").casefold() in subjects)
            and (not ids or p.id in ids)
        ]
        stop = None if self.limit is None else self.start + self.limit
        return kept[self.start : stop]
