"""An answer within max_tokens on every engine adapter: the real app and orchestrator drive the
llama.cpp and vLLM adapters against a fake engine (httpx.MockTransport) that thinks until its
request body's ``max_tokens`` runs out; the service must close the thinking in time and send
a continuation whose body leaves the answer the rest of ``max_tokens``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from unit.request.harness import MODEL, exact_equal, settings

from tts_orchestrator.api.app import build_app
from tts_orchestrator.api.deps import Services
from tts_orchestrator.api.runtime import inprocess_runtime
from tts_orchestrator.backends.base import WorkerBackend
from tts_orchestrator.backends.llamacpp import LlamaCppBackend
from tts_orchestrator.backends.replay import ReplayBackend
from tts_orchestrator.backends.vllm import VLLMBackend
from tts_orchestrator.config import ReplayConfig, Settings
from verifiers.traces import Trace

ANSWER = "The answer is \\boxed{5}."


class FakeEngine:
    """Thinks one word per token until max_tokens, unless the prompt closed the thinking."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/completions":
            body = json.loads(request.content)
            self.bodies.append(body)
            return httpx.Response(200, content=self._sse(body))
        if path == "/tokenize":
            return httpx.Response(200, json={"tokens": [1, 2, 3]})
        if path == "/slots":
            return httpx.Response(200, json=[])
        return httpx.Response(200, text="")  # /health, /metrics

    @staticmethod
    def _sse(body: dict[str, Any]) -> bytes:
        limit = int(body["max_tokens"])
        if "</think>" in body["prompt"]:
            words, finish = ANSWER.split(" "), "stop"
        else:
            words, finish = ["think"] * limit, "length"
        events = [
            {"choices": [{"index": 0, "text": w + " ", "finish_reason": None}]} for w in words
        ]
        events[-1]["choices"][0]["finish_reason"] = finish
        usage = {"prompt_tokens": 3, "completion_tokens": len(words)}
        events.append({"choices": [], "usage": usage})
        frames = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
        return "".join(frames).encode()


@contextlib.asynccontextmanager
async def _service(backend: WorkerBackend, s: Settings) -> AsyncIterator[httpx.AsyncClient]:
    @contextlib.asynccontextmanager
    async def runtime(s: Settings) -> AsyncIterator[Services]:
        async with inprocess_runtime(s, pools={"p": [backend]}, equivalent=exact_equal) as svc:
            yield svc

    app = build_app(s, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.mark.parametrize("engine", ["llama_cpp", "vllm"])
async def test_every_adapter_closes_thinking_in_time_and_answers(engine: str) -> None:
    fake = FakeEngine()
    http = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    kind = LlamaCppBackend if engine == "llama_cpp" else VLLMBackend
    backend = kind(url="http://engine", model=MODEL, client=http)
    s = settings(family="deepseek_r1")
    data = s.model_dump()
    data["pools"][0]["engine"] = engine
    async with _service(backend, Settings.model_validate(data)) as client:
        payload = {"model": MODEL, "prompt": "What is 2+3?", "max_tokens": 200}
        r = await client.post("/v1/completions", json=payload)
        body = r.json()
        assert r.status_code == 200, body
        choice = body["choices"][0]
        assert choice["text"].strip().endswith(ANSWER)
        assert choice["finish_reason"] == "stop"
        first, then = fake.bodies[0], fake.bodies[-1]
        assert first["max_tokens"] == 200
        assert then["prompt"].rstrip().endswith("</think>")
        assert then["max_tokens"] == 100
        assert body["usage"]["completion_tokens"] <= 200
    await http.aclose()


async def test_the_replay_engine_closes_thinking_in_time_and_answers() -> None:
    thinking = "Let me add 2 and 3 once more to be very sure of it. " * 40
    trace = Trace(
        id="budget/0:x",
        dataset="budget",
        model="m",
        problem="What is 2+3?",
        ground_truth="5",
        output=thinking + "</think>\n\n" + ANSWER,
        final_answer="5",
        is_correct=True,
        thinking_delimiters=("<think>", "</think>"),
        prompt_ends_with_think_tag=True,
        has_thinking_end=True,
        complete=True,
    )
    # At this rate a chunk holds a few tokens (at an unbounded one, all of them in one chunk).
    replay = ReplayBackend(ReplayConfig(tokens_per_s=500), traces=[trace])
    async with _service(replay, settings(family="deepseek_r1")) as client:
        payload = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "What is 2+3?"}],
            "max_tokens": 200,
        }
        body = (await client.post("/v1/chat/completions", json=payload)).json()
        message = body["choices"][0]["message"]
        assert message["content"].strip() == ANSWER
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"]["completion_tokens"] <= 200
        # Cut at the first chunk that reaches 100 thinking tokens (a chunk holds a few).
        assert 100 <= body["usage"]["completion_tokens_details"]["reasoning_tokens"] < 200
