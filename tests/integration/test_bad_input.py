"""Hand-written nasty requests against the live service (Redis, Ray, replay engine).

Each must end in a clean OpenAI-schema error (or a normal answer), never a 5xx or a hang;
a streaming client that stops reading or never closes must not leave a request in flight.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from benchmarks.service import RunningService, replay_pool, start_service
from tts_orchestrator.backends.replay import pseudo_tokens

pytestmark = pytest.mark.integration

MAX_BODY = 64 * 1024
MAX_PROMPT_TOKENS = 4000
DEADLINE_S = 20
TOKENS_PER_S = 50.0  # a realistic decode rate: a long trace streams for a minute
TRACES = sorted((Path(__file__).resolve().parents[2] / "evals" / "data" / "traces").glob("*.jsonl"))


def _problems() -> tuple[str, str]:
    """(a short-answer problem, a problem every trace of which is long) from the real traces."""
    outputs: dict[str, list[int]] = {}
    for path in TRACES:
        with path.open() as f:
            for line in f:
                row = json.loads(line)
                outputs.setdefault(row["problem"], []).append(len(pseudo_tokens(row["output"])))
    ordered = sorted(outputs, key=lambda p: (len(p), p))
    long_one = next(p for p in ordered if min(outputs[p]) >= 3000)
    return ordered[0], long_one


SHORT, LONG = _problems()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    config = {
        "server": {
            "max_body_bytes": MAX_BODY,
            "max_prompt_tokens": MAX_PROMPT_TOKENS,
            "default_max_tokens": 4096,
            "max_tokens_cap": 8192,
            "request_timeout_s": DEADLINE_S,
        },
        "pools": [replay_pool(tokens_per_s=TOKENS_PER_S)],
        "ray": {"num_cpus": 2},
        "tts": {"max_branches": 4},
    }
    running = start_service(config, tmp_path_factory.mktemp("bad-input-service"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(service: RunningService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30) as c:
        yield c


def _openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text[:400]
    body = r.json()
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert {"param", "code"} <= error.keys()
    return error


def _inflight(client: httpx.Client) -> int:
    return sum(p["inflight_requests"] for p in client.get("/v1/pools").json()["data"])


def _wait(predicate: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())


# -- size ----------------------------------------------------------------------------------------
def _chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize(
    "framing",
    [
        "content-length",
        "chunked",
    ],
)
def test_body_over_the_limit_is_413(client: httpx.Client, framing: str) -> None:
    body = json.dumps({"model": "replay", "prompt": "x" * (MAX_BODY + 1)}).encode()
    headers = {"content-type": "application/json"}
    content = body if framing == "content-length" else _chunks(body)
    r = client.post("/v1/completions", content=content, headers=headers)
    assert _openai_error(r, 413)["code"] == "too_large"


def _post_urllib(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post_requests(url: str, body: bytes) -> tuple[int, bytes]:
    r = requests.post(url, data=body, headers={"content-type": "application/json"}, timeout=60)
    return r.status_code, r.content


def _post_httpx(url: str, body: bytes) -> tuple[int, bytes]:
    r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=60)
    return r.status_code, r.content


@pytest.mark.parametrize(
    "post", [_post_urllib, _post_requests, _post_httpx], ids=lambda f: f.__name__[6:]
)
def test_standard_clients_see_the_413_of_an_8_mb_body(
    service: RunningService, post: Callable[[str, bytes], tuple[int, bytes]]
) -> None:
    """Clients that write the whole body before reading get the 413, not a connection reset:
    the server reads and discards the refused body (up to 64 MiB) before answering."""
    body = json.dumps({"model": "replay", "prompt": "x" * (8 << 20)}).encode()
    for _ in range(2):  # and the connection (kept alive where the client does) still works
        status, content = post(f"{service.url}/v1/completions", body)
        assert status == 413
        assert json.loads(content)["error"]["code"] == "too_large"


def test_prompt_over_the_token_limit_is_413(client: httpx.Client) -> None:
    prompt = " word" * (MAX_PROMPT_TOKENS * 2)  # ~40 KB: under the body limit
    r = client.post("/v1/completions", json={"model": "replay", "prompt": prompt})
    error = _openai_error(r, 413)
    assert error["code"] == "too_large"
    assert str(MAX_PROMPT_TOKENS) in error["message"]


# -- encoding and structure ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"model": "replay", "prompt": "\xff\xfe"}', id="invalid-utf8-in-string"),
        pytest.param(b"\xff\xfe\xfd\xfc", id="invalid-utf8-body"),
        pytest.param(
            b'{"model": "replay", "prompt": "\xed\xa0\x80"}',
            id="utf8-encoded-surrogate",
        ),
        pytest.param(b'{"model": "replay", "prompt": "a"', id="truncated-json"),
        pytest.param(b"", id="empty-body"),
        pytest.param(b"null", id="json-null"),
        pytest.param(b"[1, 2]", id="json-array"),
        pytest.param(
            b'{"model": "replay", "prompt": "\\ud800"}',
            id="lone-surrogate-escape",
        ),
    ],
)
def test_undecodable_bodies_are_400(client: httpx.Client, raw: bytes) -> None:
    r = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    # The lone surrogate escape is valid JSON but not text a tokenizer can take: 400 too.
    _openai_error(r, 400)


@pytest.mark.parametrize("depth", [100, 5_000, 30_000])
@pytest.mark.parametrize("where", ["ignored-field", "chat_template_kwargs", "tts"])
def test_deeply_nested_json_is_a_client_error(client: httpx.Client, depth: int, where: str) -> None:
    nested = "[" * depth + "]" * depth
    if where == "ignored-field":
        extra = f'"metadata": {nested}'
    elif where == "chat_template_kwargs":
        extra = f'"chat_template_kwargs": {{"x": {nested}}}'
    else:
        extra = f'"tts": {{"n_branches": {nested}}}'
    body = (
        '{"model": "replay", "max_tokens": 4, '
        f'"messages": [{{"role": "user", "content": {json.dumps(SHORT)}}}], {extra}}}'
    )
    r = client.post(
        "/v1/chat/completions", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert r.status_code < 500, f"depth {depth} in {where}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        _openai_error(r, r.status_code)


# -- values --------------------------------------------------------------------------------------
_BASE: dict[str, Any] = {
    "model": "replay",
    "messages": [{"role": "user", "content": SHORT}],
    "max_tokens": 8,
}

BAD_VALUES = [
    pytest.param({"max_tokens": -1}, {400}, "max_tokens", id="negative-max-tokens"),
    pytest.param({"max_tokens": 0}, {400}, "max_tokens", id="zero-max-tokens"),
    pytest.param({"max_tokens": 10**30}, {400}, "max_tokens", id="huge-max-tokens"),
    pytest.param({"max_completion_tokens": 2**63}, {400}, "max_tokens", id="int64-overflow"),
    pytest.param({"temperature": -1}, {400}, "temperature", id="negative-temperature"),
    pytest.param({"temperature": 1e308 * 10}, {400}, "temperature", id="infinite-temperature"),
    pytest.param({"top_p": float("nan")}, {400}, "top_p", id="nan-top-p"),
    pytest.param({"n": 2}, {400}, "n", id="n-above-one"),
    pytest.param({"top_logprobs": 10**9, "logprobs": True}, {400}, "top_logprobs", id="logprobs"),
    pytest.param({"seed": 10**100}, {400}, "seed", id="huge-seed"),
    pytest.param({"seed": -(10**100)}, {400}, "seed", id="huge-negative-seed"),
    pytest.param({"seed": 2**63}, {400}, "seed", id="seed-past-int64"),
    pytest.param({"seed": 2**63 - 1}, {200}, None, id="largest-int64-seed"),
    pytest.param({"tts": {"n_branches": 0}}, {400}, "tts.n_branches", id="zero-branches"),
    pytest.param({"tts": {"n_branches": 10**6}}, {400}, "tts.n_branches", id="million-branches"),
    pytest.param({"tts": {"seed": 2**200}}, {400}, "tts.seed", id="huge-tts-seed"),
    pytest.param({"tts": {"latency_budget_s": -1}}, {400}, "tts.latency_budget_s", id="neg-budget"),
    pytest.param({"tts": {"latency_budget_s": 1e-300}}, {200}, None, id="tiny-latency-budget"),
    pytest.param({"tts": {"thinking_budget": 10**12}}, {200}, None, id="huge-thinking-budget"),
    pytest.param({"tts": {"early_stop_window": 10**9}}, {400}, "tts.early_stop_window", id="win"),
    pytest.param({"tts": {"pool": "x" * 10_000}}, {400}, "tts.pool", id="unknown-pool"),
    pytest.param({"stop": ["a"] * 17}, {400}, "stop", id="too-many-stops"),
    pytest.param({"stop": ""}, {200}, None, id="empty-stop"),
]


@pytest.mark.parametrize(("patch", "statuses", "param"), BAD_VALUES)
def test_numbers_and_values(
    client: httpx.Client, patch: dict[str, Any], statuses: set[int], param: str | None
) -> None:
    body = json.dumps({**_BASE, **patch}, allow_nan=True)
    r = client.post(
        "/v1/chat/completions", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert r.status_code in statuses, r.text[:400]
    if r.status_code >= 400:
        error = _openai_error(r, r.status_code)
        if param is not None:
            assert param.split(".")[-1] in (error["param"] or "") + error["message"], error
    else:
        assert r.json()["choices"][0]["finish_reason"] in {"stop", "length"}


# -- unknown fields and wrong types ---------------------------------------------------------------
def test_unknown_tts_field_is_400_naming_it(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={**_BASE, "tts": {"n_branchez": 2}})
    assert _openai_error(r, 400)["param"] == "tts.n_branchez"


def test_unknown_top_level_fields_are_ignored(client: httpx.Client) -> None:
    r = client.post("/v1/chat/completions", json={**_BASE, "frobnicate": {"a": [1, 2]}})
    assert r.status_code == 200, r.text[:300]


WRONG_TYPES = [
    pytest.param("/v1/chat/completions", {**_BASE, "model": 123}, id="model-int"),
    pytest.param("/v1/chat/completions", {**_BASE, "model": ""}, id="model-empty"),
    pytest.param("/v1/chat/completions", {**_BASE, "messages": "hi"}, id="messages-string"),
    pytest.param("/v1/chat/completions", {**_BASE, "messages": []}, id="messages-empty"),
    pytest.param("/v1/chat/completions", {**_BASE, "messages": [{"role": "robot"}]}, id="role"),
    pytest.param("/v1/chat/completions", {**_BASE, "messages": [None]}, id="message-null"),
    pytest.param(
        "/v1/chat/completions",
        {**_BASE, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        id="image-part",
    ),
    pytest.param("/v1/chat/completions", {**_BASE, "stream": [1]}, id="stream-list"),
    pytest.param("/v1/chat/completions", {**_BASE, "tts": []}, id="tts-list"),
    pytest.param("/v1/chat/completions", {**_BASE, "tts": {"aggregation": "mode"}}, id="enum"),
    pytest.param("/v1/chat/completions", {**_BASE, "max_tokens": "8"}, id="max-tokens-string"),
    pytest.param("/v1/chat/completions", {**_BASE, "max_tokens": 8.5}, id="max-tokens-float"),
    pytest.param("/v1/chat/completions", {**_BASE, "stream_options": []}, id="stream-options"),
    pytest.param("/v1/completions", {"model": "replay", "prompt": ["a", "b"]}, id="prompt-list"),
    pytest.param("/v1/completions", {"model": "replay", "prompt": None}, id="prompt-null"),
    pytest.param("/v1/completions", {"model": "replay"}, id="prompt-missing"),
]


@pytest.mark.parametrize(("path", "body"), WRONG_TYPES)
def test_wrong_types_are_4xx(client: httpx.Client, path: str, body: dict[str, Any]) -> None:
    r = client.post(path, json=body)
    if body.get("max_tokens") == "8":  # pydantic's lax mode accepts a numeric string
        assert r.status_code == 200
        return
    assert 400 <= r.status_code < 500, r.text[:300]
    _openai_error(r, r.status_code)


@pytest.mark.parametrize(
    "request_id",
    ["../../etc/passwd", "a" * 5000, "x y", "%00", "{req:1}", "🦀"],
)
def test_odd_request_ids_are_4xx(client: httpx.Client, request_id: str) -> None:
    for method in ("GET", "DELETE"):
        r = client.request(method, f"/v1/requests/{request_id}")
        assert 400 <= r.status_code < 500, r.text[:300]
        _openai_error(r, r.status_code)


# -- clients that stop reading ---------------------------------------------------------------------
def _open_stream(service: RunningService, *, rcvbuf: int = 4096) -> tuple[socket.socket, str]:
    """Start a streamed chat on a long trace over a raw socket; return it and the request id."""
    host, port = service.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # a small window: backpressure
    sock.settimeout(30)
    sock.connect((host, int(port)))
    body = json.dumps(
        {"model": "replay", "messages": [{"role": "user", "content": LONG}], "stream": True}
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    seen = b""
    while b"\ndata: {" not in seen and b'"id":"' not in seen:
        chunk = sock.recv(1024)
        assert chunk, f"connection closed: {seen[:300]!r}"
        seen += chunk
    assert seen.startswith(b"HTTP/1.1 200"), seen[:300]
    request_id = seen.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
    return sock, request_id


def _status(client: httpx.Client, request_id: str) -> str:
    return str(client.get(f"/v1/requests/{request_id}").json()["status"])


def test_stream_client_that_stops_reading_then_leaves_is_cancelled(
    service: RunningService, client: httpx.Client
) -> None:
    sock, request_id = _open_stream(service)
    time.sleep(3)  # read nothing more: the server's writes back up
    assert _status(client, request_id) == "running"
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    assert _wait(lambda: _status(client, request_id) != "running", 10)
    assert _status(client, request_id) == "cancelled"
    assert _wait(lambda: _inflight(client) == 0, 10), client.get("/v1/pools").json()


def test_stream_client_that_never_reads_nor_leaves_is_ended_by_the_deadline(
    service: RunningService, client: httpx.Client
) -> None:
    """A client holding the socket open without reading must not pin the request forever."""
    sock, request_id = _open_stream(service, rcvbuf=1024)
    try:
        ended = _wait(lambda: _status(client, request_id) != "running", DEADLINE_S + 15)
        record = client.get(f"/v1/requests/{request_id}").json()
        assert ended, f"still running {DEADLINE_S + 15}s after start: {record['status']}"
        assert record["status"] in {"failed", "cancelled"}
        assert _wait(lambda: _inflight(client) == 0, 10)
    finally:
        sock.close()


def test_service_is_healthy_after_the_nasties(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    assert _wait(lambda: _inflight(client) == 0, 10)
    r = client.post("/v1/chat/completions", json=_BASE)
    assert r.status_code == 200
    assert r.json()["choices"][0]["finish_reason"] == "length"
