"""Fakes for the eval runner tests: a canned OpenAI-compatible ASGI app and an exact-match grader.

The fake app is a unit-test stand-in for pure runner logic (resume, parsing, bookkeeping); the
real service is exercised by the integration suite.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from evals.datasets import Problem

PROBLEMS = [
    Problem(id=f"p{i}", problem=f"What is {i} + {i}?", answer=str(2 * i), level=1 + i % 5)
    for i in range(6)
]


@dataclass
class FakeChatServer:
    """Answers `What is i + i?` with `\\boxed{2i}` unless the id is wrong / failing / hanging."""

    wrong: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    hanging: set[str] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)
    hang_reached: asyncio.Event = field(default_factory=asyncio.Event)

    @staticmethod
    def problem_id(body: dict[str, Any]) -> str:
        match = re.search(r"What is (\d+) \+", body["messages"][-1]["content"])
        assert match is not None
        return f"p{match.group(1)}"

    def answer(self, pid: str) -> str:
        i = int(pid[1:])
        return f"The answer is \\boxed{{{2 * i + 1 if pid in self.wrong else 2 * i}}}."

    async def chat(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append(body)
        pid = self.problem_id(body)
        if pid in self.failing:
            return JSONResponse({"error": {"message": "worker crashed"}}, status_code=502)
        if pid in self.hanging:
            self.hang_reached.set()
            await asyncio.sleep(3600)
        thinking, answer = f"Add {pid[1:]} to itself.", self.answer(pid)
        usage = {
            "prompt_tokens": 20,
            "completion_tokens": 30,
            "total_tokens": 50,
            "completion_tokens_details": {"reasoning_tokens": 12},
        }
        tts = {"branches": 2, "trims": 1, "mode": "slow"}
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "x",
                    "model": "fake-model",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"content": answer, "reasoning_content": thinking},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                    "tts": tts,
                }
            )

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, Any], **extra: Any) -> str:
                payload = {
                    "id": "x",
                    "model": "fake-model",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                    **extra,
                }
                return f"data: {json.dumps(payload)}\n\n"

            yield chunk({"role": "assistant"})
            yield chunk({"reasoning_content": thinking})
            for piece in (answer[:10], answer[10:]):
                yield chunk({"content": piece})
            yield chunk({}, usage=usage, tts=tts)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-model", "pools": ["cpu"]}]})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )

    def requested(self) -> list[tuple[str, int]]:
        """(problem id, sample index) of every request; the index is recovered from the seed."""
        return [(self.problem_id(b), b["seed"] - 1000) for b in self.calls]


class ExactGrade(BaseModel):
    extracted: str | None
    verdict: bool
    alt_verdict: bool
    timed_out: bool = False


class ExactGrader:
    """Last `\\boxed{...}` compared as text: enough for canned integer answers."""

    async def grade(self, output: str, gold: str) -> ExactGrade:
        found = re.findall(r"\\boxed\{([^{}]*)\}", output)
        extracted = found[-1] if found else None
        ok = extracted == gold
        return ExactGrade(extracted=extracted, verdict=ok, alt_verdict=ok)


@pytest.fixture
def fake_server() -> FakeChatServer:
    return FakeChatServer()


@pytest.fixture
def exact_grader() -> ExactGrader:
    return ExactGrader()


@pytest.fixture
def problems() -> list[Problem]:
    return list(PROBLEMS)


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[str, list[dict[str, Any]]], Path]:
    def write(name: str, rows: list[dict[str, Any]]) -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    return write
