"""BranchTasks (both sides of a pool run branches with it) over the replay backend, which
streams the real recorded traces in evals/data/traces."""

from __future__ import annotations

from pathlib import Path

import pytest

from tts_orchestrator.actors.branch_tasks import BranchTasks
from tts_orchestrator.actors.jobs import BranchChunk, BranchSpec, GenerationJob
from tts_orchestrator.backends.base import SamplingParams, WorkerBackend
from tts_orchestrator.backends.replay import ReplayBackend
from tts_orchestrator.config import ReplayConfig
from tts_orchestrator.exceptions import NoWorkerAvailable
from verifiers.traces import Trace, load_traces

TRACE_DIR = Path(__file__).resolve().parents[3] / "evals" / "data" / "traces"
FU_MANCHU = "Dr. Fu Manchu has a bank account"


@pytest.fixture(scope="module")
def traces() -> list[Trace]:
    return [t for t in load_traces(sorted(TRACE_DIR.glob("*.jsonl"))) if FU_MANCHU in t.problem]


class Ledger:
    """Records what BranchTasks asked of its caller."""

    def __init__(self, backend: WorkerBackend, *, refuse: set[int] | None = None) -> None:
        self.backend = backend
        self.refuse = refuse or set()
        self.placed: list[tuple[str, int]] = []
        self.released: list[tuple[str, int]] = []
        self.failed: list[str] = []

    async def place(self, request_id: str, spec: BranchSpec) -> WorkerBackend:
        if spec.index in self.refuse:
            raise NoWorkerAvailable("no healthy worker")
        self.placed.append((request_id, spec.index))
        return self.backend

    def release(self, request_id: str, spec: BranchSpec, backend: WorkerBackend) -> None:
        self.released.append((request_id, spec.index))

    async def fail(self, backend: WorkerBackend) -> None:
        self.failed.append(backend.name)

    def tasks(self) -> BranchTasks:
        return BranchTasks(place=self.place, release=self.release, failed=self.fail)


def replay(traces: list[Trace], tokens_per_s: float) -> ReplayBackend:
    config = ReplayConfig(tokens_per_s=tokens_per_s, max_parallel=8)  # type: ignore[call-arg]
    return ReplayBackend(config, traces=traces, name="replay/0")


def job(prompt: str, n: int, max_tokens: int = 64) -> GenerationJob:
    params = SamplingParams(max_tokens=max_tokens)
    return GenerationJob(
        request_id="req",
        branches=[
            BranchSpec(index=i, prompt=prompt, params=params.model_copy(update={"seed": i}))
            for i in range(n)
        ],
    )


async def drain(tasks: BranchTasks, j: GenerationJob) -> list[BranchChunk]:
    return [chunk async for batch in tasks.stream(j) for chunk in batch]


async def test_every_branch_streams_to_its_end_and_is_released_once(
    traces: list[Trace],
) -> None:
    ledger = Ledger(replay(traces, 1e6))
    chunks = await drain(ledger.tasks(), job(traces[0].problem, 3))
    finished = {c.branch for c in chunks if c.chunk is not None and c.chunk.finish_reason}
    assert finished == {0, 1, 2}
    assert all(c.error is None and c.worker == "replay/0" for c in chunks)
    assert sorted(ledger.placed) == sorted(ledger.released) == [("req", i) for i in range(3)]


async def test_aborting_one_branch_stops_it_and_leaves_the_others(traces: list[Trace]) -> None:
    backend = replay(traces, 200.0)
    ledger = Ledger(backend)
    tasks = ledger.tasks()
    seen: list[BranchChunk] = []
    aborted_at: int | None = None
    async for batch in tasks.stream(job(traces[0].problem, 2, max_tokens=120)):
        seen.extend(batch)
        if aborted_at is None and any(c.branch == 0 for c in seen):
            assert await tasks.abort("req", [0]) == 1
            aborted_at = len(seen)
            assert ("req", 0) in ledger.released  # uncounted as soon as it is aborted
    assert aborted_at is not None
    assert not any(c.branch == 0 for c in seen[aborted_at:])
    assert any(c.branch == 1 and c.chunk and c.chunk.finish_reason for c in seen)
    assert sorted(ledger.released) == [("req", 0), ("req", 1)]
    assert len(tasks) == 0


async def test_closing_the_stream_aborts_every_branch(traces: list[Trace]) -> None:
    ledger = Ledger(replay(traces, 50.0))
    tasks = ledger.tasks()
    stream = tasks.stream(job(traces[0].problem, 3, max_tokens=400))
    await anext(stream)
    await stream.aclose()
    assert sorted(ledger.released) == [("req", i) for i in range(3)]
    assert len(tasks) == 0


async def test_failures_become_error_chunks_of_their_branch(traces: list[Trace]) -> None:
    ledger = Ledger(replay(traces, 1e6), refuse={1})
    j = job(traces[0].problem, 3)
    j.branches[2] = BranchSpec(
        index=2, prompt="What is the capital of France?", params=j.branches[2].params
    )
    chunks = await drain(ledger.tasks(), j)
    errors = {c.branch: c.error for c in chunks if c.error}
    assert errors.keys() == {1, 2}
    assert errors[1] is not None
    assert errors[1].startswith("NoWorkerAvailable")
    assert errors[2] is not None
    assert "none of its" in errors[2]
    assert ledger.failed == ["replay/0"]  # the worker failed for branch 2 only
    assert sorted(ledger.released) == [("req", 0), ("req", 2)]  # branch 1 was never placed
    assert any(c.branch == 0 and c.chunk and c.chunk.finish_reason for c in chunks)


async def test_abort_of_an_unknown_request_is_a_no_op(traces: list[Trace]) -> None:
    ledger = Ledger(replay(traces, 1e6))
    assert await ledger.tasks().abort("nobody") == 0
