import pytest

from evals.client import ChatResult
from evals.records import RunStore, SampleRecord, split_tokens
from evals.scoring import build_outcomes, cluster_answers


@pytest.mark.parametrize(
    ("usage", "reasoning", "content", "expected"),
    [
        (
            {"completion_tokens": 30, "completion_tokens_details": {"reasoning_tokens": 12}},
            None,
            "x",
            (12, 18, False),
        ),
        ({"completion_tokens": 100}, "t" * 300, "a" * 100, (75, 25, True)),
        ({"completion_tokens": 40}, None, "answer", (0, 40, False)),
        (None, "thought", "answer", (None, None, False)),
    ],
    ids=["reported", "estimated-from-text", "no-thinking", "no-usage"],
)
def test_split_tokens(usage, reasoning, content, expected) -> None:
    result = ChatResult(content=content, reasoning_content=reasoning, usage=usage, latency_s=1.0)
    assert split_tokens(result) == expected


def _record(pid: str, index: int, **kw) -> SampleRecord:
    return SampleRecord(problem_id=pid, sample_index=index, gold="1", **kw)


def test_store_skips_torn_line_and_keeps_last_record_per_key(tmp_path) -> None:
    store = RunStore(tmp_path / "run.jsonl")
    store.append([_record("a", 0, error="HTTP 502"), _record("b", 0, correct=True)])
    with store.path.open("ab") as handle:  # a kill in the middle of a write
        handle.write(b'{"problem_id": "c", "sample_ind')
    store.append([_record("a", 0, correct=True, answer="1")])  # the retried sample
    records = store.load()
    assert [(r.problem_id, r.correct, r.error) for r in records] == [
        ("a", True, None),
        ("b", True, None),
    ]
    assert store.finished_keys() == {("a", 0), ("b", 0)}
    assert len(store.path.read_text().splitlines()) == 4  # the torn line stays, on its own line


def test_failed_samples_are_not_finished(tmp_path) -> None:
    store = RunStore(tmp_path / "run.jsonl")
    store.append([_record("a", 0, error="timeout"), _record("a", 1, correct=False)])
    assert store.finished_keys() == {("a", 1)}
    assert RunStore(tmp_path / "missing.jsonl").load() == []


class _LooseChecker:
    """Treats answers as equal when they agree after removing `\\dfrac` -> `\\frac`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def equivalent(self, gold: str, pred: str) -> bool:
        self.calls.append((gold, pred))
        return gold.replace("dfrac", "frac") == pred.replace("dfrac", "frac")


async def test_clusters_group_correct_answers_and_equivalent_wrong_ones() -> None:
    checker = _LooseChecker()
    clusters = await cluster_answers(
        ["2", "\\frac{1}{3}", None, "\\dfrac{1}{3}", "7", " \\frac{1}{3} ", "2.0"],
        [True, False, False, False, False, False, True],
        checker=checker,
    )
    assert clusters == [0, 1, None, 1, 2, 1, 0]
    # Exact text repeats are grouped without asking the checker.
    assert ("\\frac{1}{3}", " \\frac{1}{3} ") not in checker.calls


async def test_clusters_without_checker_use_exact_text() -> None:
    assert await cluster_answers(["a", "b", "a"], [False] * 3) == [1, 2, 1]


async def test_outcomes_order_samples_and_count_errors() -> None:
    records = [
        _record("p", 1, answer="5", latency_s=2.0),
        _record("p", 0, answer="1", correct=True, latency_s=1.0),
        _record("q", 0, error="HTTP 502"),
    ]
    p, q = await build_outcomes(records)
    assert p.correct == (True, False)
    assert p.latency_s == (1.0, 2.0)
    assert p.clusters == (0, 1)
    assert (q.correct, q.clusters, q.errors) == ((False,), (None,), 1)
