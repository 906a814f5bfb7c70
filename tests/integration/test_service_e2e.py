"""The service end to end on the CPU default, through the stock `openai` client."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.service import RunningService

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is 2 + 3? Answer with a number."}]


@pytest.fixture(scope="module")
def client(cpu_service: RunningService) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{cpu_service.url}/v1", api_key="unused", max_retries=0, timeout=60
    )


def test_chat_completion_answers_with_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, seed=1)
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in {"stop", "length"}
    assert r.usage is not None
    assert r.usage.prompt_tokens > 5
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_chat_yields_chunks_then_done(
    cpu_service: RunningService, client: openai.OpenAI
) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            max_tokens=24,
            seed=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 3
    assert text.strip()
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    # The raw SSE ends with the literal [DONE] sentinel.
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{cpu_service.url}/v1/chat/completions", json=body, timeout=60) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][5:])["object"] == "chat.completion.chunk"


def test_completions_endpoint(client: openai.OpenAI) -> None:
    r = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, seed=3
    )
    assert r.choices[0].text
    stream = client.completions.create(model=MODEL, prompt="One, two,", max_tokens=8, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices)


def test_models_lists_the_pool_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_metrics_is_prometheus_text(cpu_service: RunningService, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    r = httpx.get(f"{cpu_service.url}/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert "tts_requests" in families
    assert sum(s.value for s in families["tts_requests"].samples if s.name.endswith("_total")) >= 1


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        pytest.param(b"{not json", 400, None, id="malformed-json"),
        pytest.param({"model": MODEL}, 400, "messages", id="missing-messages"),
        pytest.param(
            {"model": MODEL, "messages": QUESTION, "max_tokens": -1},
            400,
            "max_tokens",
            id="negative-max-tokens",
        ),
        pytest.param(
            {"model": MODEL, "messages": QUESTION, "tts": {"n_branchez": 2}},
            400,
            "tts.n_branchez",
            id="unknown-tts-field",
        ),
        pytest.param(
            {"model": "no-such-model", "messages": QUESTION}, 404, "model", id="unknown-model"
        ),
        pytest.param(
            {"model": MODEL, "messages": [{"role": "user", "content": "x" * 5_000_000}]},
            413,
            None,
            id="too-large",
        ),
    ],
)
def test_bad_input_gets_openai_errors(
    cpu_service: RunningService, body: object, status: int, param: str | None
) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(
        f"{cpu_service.url}/v1/chat/completions",
        timeout=30,
        headers={"content-type": "application/json"},
        **kwargs,
    )  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"]
    assert err["type"]
    if param is not None:
        assert err["param"] == param


def test_openai_client_sees_404_for_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=QUESTION)


def test_request_record_in_redis(cpu_service: RunningService, client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, seed=5)
    record = httpx.get(f"{cpu_service.url}/v1/requests/{r.id}").json()
    assert record["id"] == r.id
    assert record["model"] == MODEL
    assert record["pool"] == "cpu-smollm2"
    assert record["status"] == "finished"
    assert record["answer"] == r.choices[0].message.content
    assert record["usage"]["completion_tokens"] == r.usage.completion_tokens  # type: ignore[union-attr]
    t = record["timings"]
    assert 0 < t["prepare_s"] < t["total_s"]
    assert 0 < t["first_chunk_s"] <= t["ttft_s"] <= t["total_s"]
    assert record["mode"]["mode"] == "fast"
    assert record["mode"]["stage"] == "default"
    assert httpx.get(f"{cpu_service.url}/v1/requests/chatcmpl-unknown").status_code == 404


def _worker_pid(service: RunningService) -> int:
    pools = httpx.get(f"{service.url}/v1/pools", timeout=10).json()["data"]
    return int(pools[0]["processes"][0]["pid"])


def _wait_healthy(service: RunningService, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{service.url}/health", timeout=5).status_code == 200:
            return
        time.sleep(0.3)
    raise AssertionError(f"service did not recover:\n{service.log_tail()}")


def test_worker_killed_mid_stream_fails_fast_and_recovers(
    cpu_service: RunningService, client: openai.OpenAI
) -> None:
    pid = _worker_pid(cpu_service)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=2000,
        stream=True,
    )
    got = 0
    started = None

    def consume() -> None:
        nonlocal got, started
        for _chunk in stream:
            got += 1
            if got == 3:
                os.kill(pid, signal.SIGKILL)
                started = time.monotonic()

    with pytest.raises(openai.APIError) as info:
        consume()
    assert started is not None
    assert time.monotonic() - started < 10
    assert "worker" in str(info.value).lower()
    _wait_healthy(cpu_service)
    assert _worker_pid(cpu_service) != pid
    r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=8)
    assert r.choices[0].message.content
