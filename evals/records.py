"""Per-sample records and the append-only run file that makes runs resumable.

A run file is JSONL, one :class:`SampleRecord` per line, written with flush + fsync so a killed
run loses at most the line being written. Loading skips a torn last line; when a key occurs more
than once (a failed sample that was retried) the last record wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, Field, ValidationError

from evals.client import ChatResult

__all__ = ["RunStore", "SampleKey", "SampleRecord", "split_tokens"]

SampleKey = tuple[str, int]


class SampleRecord(BaseModel):
    """Everything measured for one sample of one problem."""

    problem_id: str
    sample_index: int = Field(ge=0)
    gold: str
    level: int | None = None
    subject: str | None = None
    answer: str | None = Field(default=None, description="Extracted final answer.")
    correct: bool = Field(default=False, description="Grader verdict; False on error.")
    alt_correct: bool | None = Field(
        default=None, description="The lenient Qwen-style verdict, for auditing the grader."
    )
    grader_timed_out: bool = Field(default=False, description="A comparison hit the timeout.")
    latency_s: float | None = None
    ttft_s: float | None = None
    thinking_tokens: int | None = None
    answer_tokens: int | None = None
    tokens_estimated: bool = Field(
        default=False, description="Token split estimated from text lengths, not from usage."
    )
    finish_reason: str | None = None
    model: str | None = None
    tts: dict[str, Any] | None = Field(default=None, description="The response's `tts` block.")
    content: str | None = None
    reasoning_content: str | None = None
    error: str | None = Field(default=None, description="Set when the request failed.")
    token_confidence: list[float] | None = Field(
        default=None,
        description="Per-token confidence (4 decimals) when the run asked for logprobs: "
        "DeepConf's minus-mean top-k logprob (`confidence_source: top_k`) or the sampled "
        "token's logprob (`sampled`).",
    )
    confidence_source: str | None = None

    @property
    def key(self) -> SampleKey:
        return (self.problem_id, self.sample_index)


def split_tokens(result: ChatResult) -> tuple[int | None, int | None, bool]:
    """(thinking, answer, estimated) token counts of one completion.

    Uses ``usage.completion_tokens_details.reasoning_tokens`` when the server reports it;
    otherwise splits ``completion_tokens`` in proportion to the lengths of ``reasoning_content``
    and ``content`` (flagged as estimated).
    """
    usage = result.usage or {}
    completion = usage.get("completion_tokens")
    if not isinstance(completion, int):
        return None, None, False
    details = usage.get("completion_tokens_details") or {}
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    if isinstance(reasoning, int):
        return reasoning, max(0, completion - reasoning), False
    thought_chars = len(result.reasoning_content or "")
    if thought_chars == 0:
        return 0, completion, False
    total_chars = thought_chars + len(result.content)
    thinking = round(completion * thought_chars / total_chars)
    return thinking, completion - thinking, True


class RunStore:
    """Append-only JSONL file of sample records."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[SampleRecord]:
        """All readable records, the last one per key, in first-seen key order."""
        if not self.path.exists():
            return []
        latest: dict[SampleKey, SampleRecord] = {}
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = SampleRecord.model_validate_json(line)
                except ValidationError:
                    continue  # a line torn by a kill mid-write; its sample is redone
                latest[record.key] = record
        return list(latest.values())

    def finished_keys(self) -> set[SampleKey]:
        """Keys whose latest record succeeded; failed samples are retried on resume."""
        return {r.key for r in self.load() if r.error is None}

    def _repair_tail(self, handle: IO[bytes]) -> None:
        # A torn last line has no newline; start the next record on a fresh line.
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) != b"\n":
            handle.write(b"\n")

    def append(self, records: Iterable[SampleRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as handle:
            self._repair_tail(handle)
            for record in records:
                handle.write(record.model_dump_json().encode("utf-8") + b"\n")
                handle.flush()
                os.fsync(handle.fileno())


def dump_json(path: Path, payload: Any) -> None:
    """Write a JSON document atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n", "utf-8")
    os.replace(tmp, path)
