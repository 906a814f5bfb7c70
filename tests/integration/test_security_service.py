"""API keys on the real service and its real routes: keys made with the CLI against the embedded
Redis (`keys create -c CONFIG`, with the service down and while it runs), 401 without a valid
key, 429 past a rate or concurrency limit, and every per-key cap held on
`/v1/chat/completions` - on its own, with `latency_budget_s` (the latency planner plans within
the key's cap) and with `tts.mode: auto` (the probes stay within it).

One service: a replay pool over the hand-made vote traces (fast, deterministic) and a llama.cpp
pool (SmolLM2) with a planner profile, security on, its private Redis in a temporary data dir.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from integration.conftest import VOTE_TRACES

from benchmarks.service import RunningService, cpu_pool, replay_pool, start_service

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
PEPPER = "test-pepper"
SERVER_DEFAULT_BRANCHES = 4
REPLAY = {"model": "replay", "messages": [{"role": "user", "content": "VOTE-AGREE: what is nine?"}]}
SLOW_STREAM = {
    "model": "replay",
    "messages": [{"role": "user", "content": "VOTE-SLOW: what is eight?"}],
    "stream": True,
    "tts": {"n_branches": 1, "seed": 1},  # an 11k-character trace: tens of seconds
}
QUESTION = [{"role": "user", "content": "What is 2 + 3? End with \\boxed{answer}."}]


def _profiles(path: Path) -> Path:
    """A fast profile for the llama.cpp pool: with a generous budget the planner would take
    the largest N of its grid (8) if nothing capped it."""
    profile = {
        "pool": "cpu",
        "engine": "llama_cpp",
        "model": MODEL,
        "step_times": [{"concurrency": 1, "step_time_s": 0.002}],
        "prefill_tokens_per_s": 5000.0,
        "accepted_tokens_per_step": 1.0,
        "max_concurrency": 16,
        "prefix_cache_shared": True,
    }
    path.write_text(json.dumps({"profiles": [profile]}))
    return path


def _router_always_uncertain(path: Path) -> Path:
    router = json.loads(
        resources.files("policies.data").joinpath("router-default.json").read_text("utf-8")
    )
    router["thresholds"] = {"fast_below": 0.0, "slow_at_or_above": 1.0}  # every auto probes
    path.write_text(json.dumps(router))
    return path


def keys_cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`tts-orchestrator keys ...` as an operator runs it: the config only, no Redis URL."""
    return subprocess.run(
        [sys.executable, "-m", "tts_orchestrator", "keys", *args, "-c", str(config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def create_key(config_path: Path, name: str, *limits: str) -> str:
    return keys_cli(config_path, "create", "--name", name, *limits).stdout.strip()


@dataclass
class Deployment:
    service: RunningService
    config_path: Path
    keys: dict[str, str]

    def bearer(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("secure-service")
    config: dict[str, Any] = {
        "server": {"default_max_tokens": 64},
        "pools": [
            replay_pool(traces=[VOTE_TRACES], tokens_per_s=400),
            {**cpu_pool("cpu", n_parallel=4), "model": MODEL},
        ],
        "redis": {"data_dir": str(workdir / "redis")},
        "ray": {"num_cpus": 2},
        "tts": {"n_branches": SERVER_DEFAULT_BRANCHES},
        "policy": {
            "profiles_path": str(_profiles(workdir / "profiles.json")),
            "live_update_interval_s": 3600,
        },
        "modes": {
            "router_model": str(_router_always_uncertain(workdir / "router.json")),
            "probe_samples": 3,
            "probe_max_tokens": 24,
        },
        "security": {"enabled": True, "pepper": PEPPER},
    }
    config_path = workdir / "service.yaml"
    config_path.write_text(yaml.safe_dump(config))
    # Made while the service is down: the CLI opens the data directory itself.
    keys = {"early": create_key(config_path, "early", "--rpm", "0", "--concurrency", "0")}
    service = start_service(config, workdir)
    try:
        # Made while it runs: the CLI reaches the service's own redis-server.
        for name, limits in {
            "free": ("--rpm", "0", "--concurrency", "0"),
            "other": ("--rpm", "0", "--concurrency", "0"),
            "rate": ("--rpm", "3", "--concurrency", "0"),
            "one-at-a-time": ("--rpm", "0", "--concurrency", "1"),
            "cap2": ("--rpm", "0", "--concurrency", "0", "--max-branches", "2",
                     "--max-tokens", "48"),
            "cap6": ("--rpm", "0", "--concurrency", "0", "--max-branches", "6"),
            "revoked": ("--rpm", "0",),
            "tokens": ("--rpm", "0", "--concurrency", "0", "--daily-tokens", "20"),
        }.items():  # fmt: skip
            keys[name] = create_key(config_path, name, *limits)
        listed = [
            json.loads(line) for line in keys_cli(config_path, "list", "--json").stdout.splitlines()
        ]
        revoked_id = next(k["id"] for k in listed if k["name"] == "revoked")
        keys_cli(config_path, "revoke", revoked_id)
        yield Deployment(service, config_path, keys)
    finally:
        service.stop()
    log = service.log_path.read_text()
    assert not any(secret[4:] in log for secret in keys.values())


def _post(d: Deployment, body: dict[str, Any], key: str | None, **kw: Any) -> httpx.Response:
    headers = d.bearer(key) if key else kw.pop("headers", {})
    return httpx.post(
        f"{d.service.url}/v1/chat/completions", json=body, headers=headers, timeout=120, **kw
    )


def _record(d: Deployment, request_id: str, key: str) -> dict[str, Any]:
    r = httpx.get(f"{d.service.url}/v1/requests/{request_id}", headers=d.bearer(key), timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _error(r: httpx.Response, status: int, error_type: str, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code), error
    return error


UNAUTHENTICATED = [
    pytest.param({}, "missing_api_key", id="no-key"),
    pytest.param({"Authorization": "tts-abc"}, "invalid_authorization_header", id="no-bearer"),
    pytest.param({"Authorization": "Bearer tts-" + "A" * 43}, "invalid_api_key", id="forged"),
    pytest.param({"api-key": "tts-wrong"}, "invalid_api_key", id="garbage-api-key"),
]


@pytest.mark.parametrize(("headers", "code"), UNAUTHENTICATED)
def test_no_valid_key_is_401_on_the_real_routes(
    deployment: Deployment, headers: dict[str, str], code: str
) -> None:
    d = deployment
    r = _post(d, REPLAY, None, headers=headers)
    _error(r, 401, "authentication_error", code)
    assert r.headers["www-authenticate"] == "Bearer"
    r = httpx.get(f"{d.service.url}/v1/models", headers=headers, timeout=10)
    assert r.status_code == 401


def test_a_revoked_key_is_401_and_good_keys_from_either_cli_path_work(
    deployment: Deployment,
) -> None:
    d = deployment
    _error(_post(d, REPLAY, "revoked"), 401, "authentication_error", "revoked_api_key")
    for name in ("early", "free"):
        r = _post(d, REPLAY, name)
        assert r.status_code == 200, r.text
    r = httpx.post(
        f"{d.service.url}/v1/chat/completions",
        json=REPLAY,
        headers={"api-key": d.keys["free"]},
        timeout=60,
    )
    assert r.status_code == 200


def test_a_request_belongs_to_its_key(deployment: Deployment) -> None:
    d = deployment
    r = _post(d, REPLAY, "free")
    path = f"{d.service.url}/v1/requests/{r.json()['id']}"
    assert httpx.get(path, headers=d.bearer("free"), timeout=10).json()["owner"]
    assert httpx.get(path, headers=d.bearer("other"), timeout=10).status_code == 404
    assert httpx.delete(path, headers=d.bearer("other"), timeout=10).status_code == 404
    assert httpx.get(path, timeout=10).status_code == 401


def test_past_its_rate_a_key_gets_429_with_retry_after(deployment: Deployment) -> None:
    d = deployment
    statuses = [_post(d, REPLAY, "rate") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    _error(statuses[-1], 429, "rate_limit_error", "rate_limit_exceeded")
    assert 1 <= int(statuses[-1].headers["retry-after"]) <= 60
    metrics = httpx.get(f"{d.service.url}/metrics", headers=d.bearer("free"), timeout=10).text
    assert re.search(r'tts_errors_total\{type="rate_limit_error"\} [1-9]', metrics)


async def test_past_its_daily_tokens_a_key_gets_429(deployment: Deployment) -> None:
    d = deployment
    first = _post(d, REPLAY, "tokens")
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] > 20
    for _ in range(50):  # the key is charged when the response is over, off the request path
        r = _post(d, REPLAY, "tokens")
        if r.status_code == 429:
            break
        await asyncio.sleep(0.1)
    _error(r, 429, "rate_limit_error", "token_budget_exhausted")


async def test_a_stream_holds_its_slot_until_the_client_goes(deployment: Deployment) -> None:
    d = deployment
    url = f"{d.service.url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream(
            "POST", url, json=SLOW_STREAM, headers=d.bearer("one-at-a-time")
        ) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            while not (await anext(lines)).startswith("data: "):
                pass
            second = await http.post(url, json=REPLAY, headers=d.bearer("one-at-a-time"))
            _error(second, 429, "rate_limit_error", "concurrency_limit_exceeded")
        # The client went away mid-stream: its slot is freed (well before the lease's own
        # 30 s expiry), the next request is admitted.
        gone_at = time.monotonic()
        while True:
            r = await http.post(url, json=REPLAY, headers=d.bearer("one-at-a-time"))
            if r.status_code == 200 or time.monotonic() - gone_at > 10:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 200, f"{time.monotonic() - gone_at:.1f}s: {r.text}"


def test_explicit_values_over_a_cap_are_400(deployment: Deployment) -> None:
    d = deployment
    r = _post(d, {**REPLAY, "max_tokens": 49}, "cap2")
    assert _error(r, 400, "invalid_request_error", "key_limit")["param"] == "max_tokens"
    r = _post(d, {**REPLAY, "tts": {"n_branches": 3}}, "cap2")
    assert _error(r, 400, "invalid_request_error", "key_limit")["param"] == "tts.n_branches"
    r = _post(d, {**REPLAY, "max_tokens": 48, "tts": {"n_branches": 2}}, "cap2")
    assert r.status_code == 200, r.text


def test_server_defaults_above_a_cap_are_capped(deployment: Deployment) -> None:
    d = deployment
    r = _post(d, REPLAY, "cap2")
    assert r.status_code == 200, r.text
    branches = r.json()["tts"]["branches"]
    assert len(branches) == 2  # the server default is 4
    record = _record(d, r.json()["id"], "cap2")
    assert len(record["branches"]) == 2
    assert record["params"]["sampling"]["max_tokens"] == 48  # the server default is 64
    r = _post(d, REPLAY, "free")
    assert len(r.json()["tts"]["branches"]) == SERVER_DEFAULT_BRANCHES


@pytest.mark.parametrize(
    ("key", "cap"),
    [
        pytest.param("cap2", 2, id="server-default-above-the-cap"),
        pytest.param("cap6", 6, id="server-default-within-the-cap"),
    ],
)
def test_the_latency_planner_plans_within_the_key_cap(
    deployment: Deployment, key: str, cap: int
) -> None:
    d = deployment
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 16, "tts": {"latency_budget_s": 60}}
    free = _post(d, body, "free")
    assert free.status_code == 200, free.text
    unbounded = _record(d, free.json()["id"], "free")["plan"]
    assert unbounded is not None
    assert unbounded["n_branches"] > cap
    r = _post(d, body, key)
    assert r.status_code == 200, r.text
    record = _record(d, r.json()["id"], key)
    assert record["plan"] is not None, "latency_budget_s was ignored"
    assert 1 <= record["plan"]["n_branches"] <= cap
    assert len(record["branches"]) == record["plan"]["n_branches"]


def test_auto_mode_probes_within_the_key_cap(deployment: Deployment) -> None:
    d = deployment
    body = {
        "model": MODEL,
        "messages": QUESTION,
        "max_tokens": 32,
        "tts": {"mode": "auto", "thinking_budget": 8, "seed": 3},
    }
    r = _post(d, body, "cap2")
    assert r.status_code == 200, r.text
    record = _record(d, r.json()["id"], "cap2")
    mode = record["mode"]
    assert mode["stage"] == "probe", mode
    assert re.search(r"\b\d/2\b", mode["reason"]), mode["reason"]
    assert "/3" not in mode["reason"], mode["reason"]
    assert len(record["branches"]) <= 2
    free = _record(d, _post(d, body, "free").json()["id"], "free")["mode"]["reason"]
    assert "/3" in free  # the configured probe count, where no key caps it


def test_keys_list_shows_the_limits_they_were_made_with(deployment: Deployment) -> None:
    listed = {
        k["name"]: k
        for k in map(
            json.loads, keys_cli(deployment.config_path, "list", "--json").stdout.splitlines()
        )
    }
    assert listed["free"]["limits"]["requests_per_minute"] is None  # 0 = unlimited, not 60
    assert (
        listed["cap2"]["limits"] | {"max_branches": 2, "max_tokens": 48} == listed["cap2"]["limits"]
    )
    assert listed["revoked"]["revoked_at"] is not None
    assert listed["early"]["revoked_at"] is None


def test_a_thinking_budget_cut_stays_within_the_key_max_tokens(deployment: Deployment) -> None:
    """After the budget is spent the branch is told to answer; that answer (512 tokens by
    default) must still fit in what is left of the key's `max_tokens`."""
    d = deployment
    body = {
        "model": MODEL,
        "messages": QUESTION,
        "tts": {"mode": "slow", "thinking_budget": 8, "n_branches": 2, "seed": 5},
    }
    r = _post(d, body, "cap2")
    assert r.status_code == 200, r.text
    record = _record(d, r.json()["id"], "cap2")
    assert record["params"]["sampling"]["max_tokens"] == 48
    assert any(b["tokens"] >= 8 for b in record["branches"])  # the budget was reached
    assert all(b["tokens"] <= 48 for b in record["branches"]), record["branches"]
    assert r.json()["usage"]["completion_tokens"] <= 2 * 48
