"""Branches on a real llama.cpp server: answers, detail, and engine slots freed on abort."""

from __future__ import annotations

import time

import httpx
import pytest

from benchmarks.service import RunningService

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
LONG = [{"role": "user", "content": "Write a long story about a brave knight and a dragon."}]


def worker_url(service: RunningService) -> str:
    pools = httpx.get(f"{service.url}/v1/pools", timeout=10).json()["data"]
    return str(pools[0]["processes"][0]["url"])


def busy_slots(url: str) -> int:
    return sum(1 for s in httpx.get(f"{url}/slots", timeout=5).json() if s["is_processing"])


def wait_slots_busy(url: str, at_least: int, within_s: float) -> int:
    """The most slots seen busy at once, polling until ``at_least`` are or time runs out."""
    deadline = time.monotonic() + within_s
    most = 0
    while time.monotonic() < deadline and most < at_least:
        most = max(most, busy_slots(url))
        time.sleep(0.02)
    return most


def wait_slots_free(url: str, within_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        if busy_slots(url) == 0:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{busy_slots(url)} slots still busy after {within_s}s")


def test_four_branches_answer_with_detail(cpu_service: RunningService) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is 2 + 3? End with \\boxed{answer}."}],
        "max_tokens": 48,
        "tts": {"n_branches": 4, "seed": 11},
    }
    r = httpx.post(f"{cpu_service.url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    data = r.json()
    tts = data["tts"]
    assert tts["n_branches"] == 4
    assert len(tts["branches"]) == 4
    assert [b["seed"] for b in tts["branches"]] == [11, 12, 13, 14]
    assert all(b["tokens"] > 0 for b in tts["branches"])
    assert data["usage"]["completion_tokens"] == sum(b["tokens"] for b in tts["branches"])
    assert data["choices"][0]["message"]["content"] or tts["vote"]["winner"] is None
    assert data["choices"][0]["message"]["reasoning_content"]


def test_client_disconnect_frees_every_slot(cpu_service: RunningService) -> None:
    url = worker_url(cpu_service)
    body = {
        "model": MODEL,
        "messages": LONG,
        "max_tokens": 1500,
        "stream": True,
        "tts": {"n_branches": 4},
    }
    with httpx.stream("POST", f"{cpu_service.url}/v1/chat/completions", json=body, timeout=60) as r:
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data:")
            if seen >= 5:
                break
        # /slots is a snapshot, and on a loaded machine the last branches may still be queued
        # for prefill when the first chunks arrive: wait (bounded) until they all decode.
        assert wait_slots_busy(url, at_least=3, within_s=15.0) >= 3
    assert wait_slots_free(url, within_s=1.0) < 1.0


def test_latency_budget_aborts_engine_requests(cpu_service: RunningService) -> None:
    url = worker_url(cpu_service)
    body = {
        "model": MODEL,
        "messages": LONG,
        "max_tokens": 1500,
        "tts": {"n_branches": 4, "latency_budget_s": 1.0},
    }
    r = httpx.post(f"{cpu_service.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["tts"]["budget_reached"] is True
    assert wait_slots_free(url, within_s=1.0) < 1.0


def test_delete_cancels_a_running_request(cpu_service: RunningService) -> None:
    url = worker_url(cpu_service)
    body = {
        "model": MODEL,
        "messages": LONG,
        "max_tokens": 1500,
        "stream": True,
        "tts": {"n_branches": 2},
    }
    with httpx.stream("POST", f"{cpu_service.url}/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        first = next(ln for ln in lines if ln.startswith("data:"))
        request_id = httpx.Response(200, content=first[5:]).json()["id"]
        d = httpx.delete(f"{cpu_service.url}/v1/requests/{request_id}", timeout=10)
        assert d.status_code == 200
        assert d.json()["cancelled"] is True
        rest = [ln for ln in lines if ln.startswith("data:")]
    assert '"error"' in rest[-2]
    assert "cancelled" in rest[-2]
    assert rest[-1] == "data: [DONE]"
    assert wait_slots_free(url, within_s=1.0) < 1.0
    record = httpx.get(f"{cpu_service.url}/v1/requests/{request_id}").json()
    assert record["status"] == "cancelled"
