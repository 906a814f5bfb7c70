"""Reading trace files and sample banks, and grouping records per problem.

Two layouts, told apart by each row:

* a trace row (``evals/data/traces``): one generation per line (see :class:`Trace`);
* a sample-bank row (``evals/data/samples``): one problem per line with ``samples[]``, each sample
  a full response (``text``) with its graded answer; every sample becomes one :class:`Trace`
  (no thinking part, ``problem_id`` = the row's id).

A :class:`ProblemGroup` is every record of one problem (``Trace.problem_key``) in load order:
the MiP files joined on ``problem_id`` make one group of up to four models per problem, a sample
bank one group of eight samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from verifiers.traces.model import Trace, TraceFormatError

__all__ = ["ProblemGroup", "group_by_problem", "load_traces", "sample_traces"]


def sample_traces(row: Mapping[str, Any], *, model: str = "") -> list[Trace]:
    """The samples of one sample-bank row as traces (``<id>#<j>``)."""
    problem_id = str(row["id"])
    base = {
        "problem_id": problem_id,
        "dataset": problem_id.split("/", 1)[0],
        "model": model or str(row.get("model", "")),
        "problem": row["problem"],
        "ground_truth": row["ground_truth"],
        "level": row.get("level"),
        "subject": row.get("subject"),
        "prompt": row.get("system_prompt"),
    }
    traces = []
    for j, sample in enumerate(row["samples"]):
        correct = sample.get("correct_math_verify", sample.get("correct"))
        traces.append(
            Trace.model_validate(
                base
                | {
                    "id": f"{problem_id}#{j}",
                    "output": sample["text"],
                    "final_answer": sample.get("boxed_answer") or sample.get("answer"),
                    "is_correct": correct,
                }
            )
        )
    return traces


def _rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace file {path}: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"invalid trace at {path}:{number}: {exc}") from exc


def load_traces(
    paths: Iterable[str | Path],
    *,
    datasets: Sequence[str] | None = None,
    complete_only: bool = False,
) -> list[Trace]:
    """Every record of the given trace files and sample banks, in file order.

    Keeps the given source datasets (all when None) and, with ``complete_only``, only traces
    that were not cut off. Raises TraceFormatError naming the file (and line) when a file is
    missing or a row is invalid.
    """
    traces: list[Trace] = []
    for path in map(Path, paths):
        for number, row in _rows(path):
            try:
                records = sample_traces(row) if "samples" in row else [Trace.model_validate(row)]
            except (KeyError, ValidationError) as exc:
                raise TraceFormatError(f"invalid trace at {path}:{number}: {exc}") from exc
            traces.extend(
                t
                for t in records
                if (datasets is None or t.dataset in datasets) and (t.complete or not complete_only)
            )
    return traces


class ProblemGroup(BaseModel):
    """Every recorded sample of one problem: what the branches of a request are drawn from."""

    model_config = ConfigDict(frozen=True)

    key: str
    traces: tuple[Trace, ...] = Field(min_length=1)

    @property
    def size(self) -> int:
        return len(self.traces)

    @property
    def problem(self) -> str:
        return self.traces[0].problem

    @property
    def ground_truth(self) -> str:
        return self.traces[0].ground_truth

    @property
    def models(self) -> list[str]:
        return sorted({t.model for t in self.traces})


def group_by_problem(traces: Iterable[Trace]) -> list[ProblemGroup]:
    """Records grouped by `Trace.problem_key`, groups in order of first appearance."""
    grouped: dict[str, list[Trace]] = {}
    for trace in traces:
        grouped.setdefault(trace.problem_key, []).append(trace)
    return [ProblemGroup(key=key, traces=tuple(members)) for key, members in grouped.items()]
