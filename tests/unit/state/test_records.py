from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tts_orchestrator.state.records import (
    IMMUTABLE_BRANCH_FIELDS,
    IMMUTABLE_REQUEST_FIELDS,
    BranchRecord,
    RecordStatus,
    RequestRecord,
    json_update,
)


def _record(**overrides: Any) -> RequestRecord:
    fields: dict[str, Any] = {"id": "req-1", "model": "m", "pool": "p", "endpoint": "chat"}
    return RequestRecord(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"status": "running"}, {"status": "running"}, id="enum-from-string"),
        pytest.param(
            {"usage": {"prompt_tokens": 3}},
            {
                "usage": {
                    "prompt_tokens": 3,
                    "completion_tokens": 0,
                    "reasoning_tokens": 0,
                    "cached_prompt_tokens": 0,
                    "total_tokens": 0,
                }
            },
            id="nested-model-completed-with-defaults",
        ),
        pytest.param({"timings": {"ttft_s": 1}}, {"timings": {"ttft_s": 1.0}}, id="int-to-float"),
        pytest.param({"error": None, "answer": None}, {"error": None, "answer": None}, id="nulls"),
    ],
)
def test_json_update_validates_and_dumps(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert json_update(RequestRecord, fields, immutable=IMMUTABLE_REQUEST_FIELDS) == expected


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"status": "exploded"}, "status", id="invalid-enum"),
        pytest.param({"colour": "red"}, "unknown RequestRecord field", id="unknown-field"),
        pytest.param({"id": "req-2"}, "cannot be updated: id", id="immutable-id"),
        pytest.param({"branches": []}, "cannot be updated: branches", id="immutable-branches"),
        pytest.param({"usage": {"prompt_tokens": -1}}, "prompt_tokens", id="negative-count"),
    ],
)
def test_json_update_rejects_bad_request_updates(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        json_update(RequestRecord, fields, immutable=IMMUTABLE_REQUEST_FIELDS)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"index": 3}, id="immutable-index"),
        pytest.param({"tokens": -1}, id="negative-tokens"),
        pytest.param({"aborted": "maybe"}, id="not-a-bool"),
    ],
)
def test_json_update_rejects_bad_branch_updates(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        json_update(BranchRecord, fields, immutable=IMMUTABLE_BRANCH_FIELDS)


def test_record_json_round_trip_is_exact() -> None:
    record = _record(
        params={"temperature": 0.7, "tts": {"n_branches": 4}},
        timings={"ttft_s": 0.1 + 0.2},
        vote={"counts": {"1/2": 3}},
        branches=[BranchRecord(index=0, seed=7, answer="\\frac{1}{2}", aborted=True)],
    )
    assert RequestRecord.model_validate_json(record.model_dump_json()) == record


@pytest.mark.parametrize(
    "request_id",
    [
        pytest.param("", id="empty"),
        pytest.param("has space", id="space"),
        pytest.param("brace{tag}", id="hash-tag-braces"),
        pytest.param("-leading-dash", id="leading-dash"),
        pytest.param("x" * 129, id="too-long"),
    ],
)
def test_request_id_must_be_key_safe(request_id: str) -> None:
    with pytest.raises(ValidationError):
        _record(id=request_id)


def test_branch_indexes_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="unique"):
        _record(branches=[BranchRecord(index=1), BranchRecord(index=1)])


@pytest.mark.parametrize(
    ("status", "terminal"),
    [(RecordStatus.QUEUED, False), (RecordStatus.RUNNING, False)]
    + [(s, True) for s in (RecordStatus.FINISHED, RecordStatus.FAILED, RecordStatus.CANCELLED)],
    ids=str,
)
def test_terminal_statuses(status: RecordStatus, terminal: bool) -> None:
    assert status.terminal is terminal
