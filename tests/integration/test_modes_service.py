"""Fast / slow / auto thinking through the real service (llama.cpp + SmolLM2, Redis, Ray).

Two pools serve the same GGUF: ``prompted`` as the instruction model it is (family ``generic``:
slow = system instruction + ``<think>`` grammar) and ``r1`` declared an always-thinking family
(``deepseek_r1``: the thinking block is opened or closed by prefill), so both kinds of switch run
on a real engine. A stage-1 router with an empty confident band sends every ``auto`` request to
the stage-3 probe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import pytest

from benchmarks.service import RunningService, cpu_pool, start_service

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is 2 + 3? End with \\boxed{answer}."}]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("modes-service")
    router = json.loads(
        resources.files("policies.data").joinpath("router-default.json").read_text("utf-8")
    )
    router["thresholds"] = {"fast_below": 0.0, "slow_at_or_above": 1.0}  # always uncertain
    router_path = workdir / "router-always-uncertain.json"
    router_path.write_text(json.dumps(router))
    r1 = cpu_pool("r1", n_parallel=3)
    r1["model_family"] = "deepseek_r1"
    config = {
        "server": {"default_max_tokens": 64},
        "pools": [cpu_pool("prompted", n_parallel=3), r1],
        "ray": {"num_cpus": 2},
        "modes": {"router_model": str(router_path), "probe_samples": 3, "probe_max_tokens": 24},
    }
    svc = start_service(config, workdir)
    yield svc
    svc.stop()


def chat(service: RunningService, pool: str, **extra: Any) -> httpx.Response:
    tts = {"pool": pool, "seed": 3, **extra.pop("tts", {})}
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 64, "tts": tts, **extra}
    return httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=120)


def record(service: RunningService, request_id: str) -> dict[str, Any]:
    r = httpx.get(f"{service.url}/v1/requests/{request_id}", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.parametrize("pool", ["prompted", "r1"])
def test_fast_returns_no_reasoning_and_slow_does(service: RunningService, pool: str) -> None:
    fast = chat(service, pool, tts={"mode": "fast"})
    slow = chat(service, pool, tts={"mode": "slow", "thinking_budget": 16})
    assert fast.status_code == 200, (fast.text, slow.text)
    assert slow.status_code == 200, (fast.text, slow.text)
    fast_msg, slow_msg = fast.json()["choices"][0]["message"], slow.json()["choices"][0]["message"]
    assert fast_msg["reasoning_content"] is None
    assert fast_msg["content"]
    assert slow_msg["reasoning_content"]
    for response, mode in ((fast, "fast"), (slow, "slow")):
        rec = record(service, response.json()["id"])
        assert rec["mode"]["mode"] == mode
        assert rec["mode"]["stage"] == "request"
        assert rec["mode"]["reason"] == f"tts.mode={mode} requested"
        assert rec["mode"]["switch"].startswith(pool_family(pool))
        assert response.json()["tts"]["mode"]["mode"] == mode


def pool_family(pool: str) -> str:
    return {"prompted": "generic", "r1": "deepseek_r1"}[pool]


def test_unswitched_requests_run_the_family_default(service: RunningService) -> None:
    plain = chat(service, "prompted")
    r1 = chat(service, "r1", tts={"thinking_budget": 16})
    assert plain.json()["choices"][0]["message"]["reasoning_content"] is None
    assert r1.json()["choices"][0]["message"]["reasoning_content"]
    assert record(service, plain.json()["id"])["mode"]["mode"] == "fast"
    rec = record(service, r1.json()["id"])["mode"]
    assert rec["mode"] == "slow"
    assert rec["stage"] == "default"
    assert "deepseek_r1" in rec["reason"]


def test_reasoning_effort_maps_to_a_mode(service: RunningService) -> None:
    low = chat(service, "r1", reasoning_effort="low")
    assert low.status_code == 200, low.text
    assert low.json()["choices"][0]["message"]["reasoning_content"] is None
    rec = record(service, low.json()["id"])["mode"]
    assert rec["mode"] == "fast"
    assert rec["stage"] == "effort"


def test_bad_mode_inputs_are_400_in_the_openai_schema(service: RunningService) -> None:
    bad_effort = chat(service, "r1", reasoning_effort="extreme")
    assert bad_effort.status_code == 400
    assert bad_effort.json()["error"]["param"] == "reasoning_effort"
    bad_mode = chat(service, "r1", tts={"mode": "medium"})
    assert bad_mode.status_code == 400
    assert "mode" in bad_mode.json()["error"]["message"]


def test_auto_probes_then_stays_fast_or_escalates(service: RunningService) -> None:
    r = chat(service, "prompted", tts={"mode": "auto", "thinking_budget": 16})
    assert r.status_code == 200, r.text
    data = r.json()
    rec = record(service, data["id"])
    mode = rec["mode"]
    assert mode["stage"] == "probe"
    assert mode["mode"] in ("fast", "slow")
    assert "uncertain" in mode["reason"]
    assert "stage 3" in mode["reason"]
    assert data["tts"]["mode"] == {k: v for k, v in mode.items() if v is not None}
    message = data["choices"][0]["message"]
    if mode["mode"] == "fast":
        assert message["reasoning_content"] is None
        assert message["content"]
        assert data["usage"]["completion_tokens"] <= 3 * 24
    else:
        assert message["reasoning_content"]
        # The probes' tokens are part of the request's cost.
        assert data["usage"]["completion_tokens"] > 16
    metrics = httpx.get(f"{service.url}/metrics", timeout=10).text
    assert f'tts_mode_decisions_total{{mode="{mode["mode"]}",stage="probe"}}' in metrics
    assert 'tts_mode_decisions_total{mode="fast",stage="request"}' in metrics
