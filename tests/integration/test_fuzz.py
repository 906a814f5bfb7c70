"""Fuzz every endpoint of the live service from its own OpenAPI schema (schemathesis).

The service runs for real (Redis, Ray, the replay engine over the recorded Sky-T1 / R1 traces),
so generation is cheap but goes through the whole pipeline. Request bodies are generated from
the schema (valid ones, and invalid ones for operations with inputs); a third of them are
steered to the served model and a real trace problem so they reach generation, branching,
voting and trimming rather than stopping at validation. Every response must be:

* not a 5xx (the replay pool answers any prompt, as a real engine would);
* on time: each request has a 30 s client timeout; a timeout fails the test (a hang);
* for a 4xx, an OpenAI error body ``{"error": {"message", "type", "param", "code"}}``;
* for a 2xx JSON body, conformant to the response schema; for SSE, ``data:`` lines of JSON
  (errors in the OpenAI shape) ending with ``data: [DONE]``.

After the run the service must still be healthy with no request in flight.

Case count: ``TTS_FUZZ_CASES`` (default 150, what CI runs), spread over the operations by
weight. The full run (``TTS_FUZZ_DOCS=1`` writes its figure into docs/benchmarks.md)::

    TTS_FUZZ_CASES=1200 TTS_FUZZ_DOCS=1 .venv/bin/pytest tests/integration/test_fuzz.py \
        -p no:cacheprovider -s
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from benchmarks.service import RunningService, replay_pool, start_service
from evals.docs import write_section

pytestmark = pytest.mark.integration

CASES = int(os.environ.get("TTS_FUZZ_CASES", "150"))
WRITE_DOCS = os.environ.get("TTS_FUZZ_DOCS") == "1"  # the full run records its figure
FUZZ_SECTION = "Fuzz: every endpoint from its OpenAPI schema (issue 14)"
FUZZ_COMMAND = (
    "TTS_FUZZ_CASES={cases} TTS_FUZZ_DOCS=1 pytest tests/integration/test_fuzz.py "
    "-p no:cacheprovider -s"
)
REQUEST_TIMEOUT_S = 30.0
MAX_TOKENS_CAP = 2048
MAX_BRANCHES = 4
TRACES = sorted((Path(__file__).resolve().parents[2] / "evals" / "data" / "traces").glob("*.jsonl"))

#: (method, path) -> share of the case budget. Every operation of the schema must be here.
OPERATIONS: dict[tuple[str, str], float] = {
    ("POST", "/v1/chat/completions"): 0.30,
    ("POST", "/v1/completions"): 0.30,
    ("GET", "/v1/requests/{request_id}"): 0.10,
    ("DELETE", "/v1/requests/{request_id}"): 0.10,
    ("GET", "/v1/models"): 0.05,
    ("GET", "/v1/pools"): 0.05,
    ("GET", "/health"): 0.05,
    ("GET", "/metrics"): 0.05,
}
#: Operations with a body; a bare string path parameter has no invalid values to generate.
WITH_INPUT = {op for op in OPERATIONS if op[0] == "POST"}


#: What the replay pool streams for a fuzzed prompt (which holds no recorded problem).
FALLBACK = "Let me think.</think>\n\nThe answer is \\boxed{42}."

#: Error types the service uses for 5xx statuses (a stream that already sent 200 carries them).
SERVER_ERROR_TYPES = {"internal_error", "worker_error", "service_unavailable", "timeout_error"}


def _problems() -> list[str]:
    out: list[str] = []
    for path in TRACES:
        with path.open() as f:
            out += [json.loads(line)["problem"] for line in f if line.strip()]
    return sorted(set(out), key=len)[:200]  # short problems: cheaper prompts


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    pool = replay_pool(tokens_per_s=4000)
    config = {
        "server": {
            "default_max_tokens": 256,
            "max_tokens_cap": MAX_TOKENS_CAP,
            "request_timeout_s": 60,
        },
        # Like a real engine, the pool answers any prompt (fuzzed prompts hold no recorded
        # problem): a 5xx is then the service's own failure.
        "pools": [{**pool, "replay": {**pool["replay"], "fallback_text": FALLBACK}}],
        "ray": {"num_cpus": 2},
        "tts": {"max_branches": MAX_BRANCHES},
    }
    running = start_service(config, tmp_path_factory.mktemp("fuzz-service"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def schema(service: RunningService) -> Any:
    return schemathesis.openapi.from_url(f"{service.url}/openapi.json")


@pytest.fixture(scope="module")
def tally(service: RunningService) -> Iterator[Counter[str]]:
    counts: Counter[str] = Counter()
    yield counts
    print(f"\nfuzz tally ({CASES} cases requested): " + json.dumps(dict(sorted(counts.items()))))
    if WRITE_DOCS:
        write_section(FUZZ_SECTION, fuzz_summary(counts), FUZZ_COMMAND.format(cases=CASES))


def fuzz_summary(counts: Counter[str]) -> str:
    """The run's figure for docs/benchmarks.md, from the tally (nothing typed by hand)."""
    by_status: Counter[str] = Counter()
    sse_errors: Counter[str] = Counter()
    for label, n in counts.items():
        words = label.split()
        if words[0] == "slowest":
            continue
        if words[2] == "sse-error":
            sse_errors[" ".join(words[3:])] += n
        else:
            by_status[" ".join(words[2:])] += n
    responses = sum(by_status.values())
    server_errors = sum(n for s, n in by_status.items() if s.startswith("5"))
    slowest = max((n for label, n in counts.items() if label.startswith("slowest")), default=0)
    rows = ["| status | responses |", "|---|---:|"] + [
        f"| {status} | {n} |" for status, n in sorted(by_status.items())
    ]
    return (
        f"Schemathesis over the service's own OpenAPI schema, every operation, valid and invalid "
        f"bodies, on the real service (Redis, Ray, replay engine answering any prompt): "
        f"**{responses} requests, {server_errors} 5xx**; streams ending in an error event: "
        f"{dict(sse_errors) or 0}; "
        "slowest response "
        f"{slowest} ms (a hang is {REQUEST_TIMEOUT_S:g} s).\n\n" + "\n".join(rows)
    )


def test_every_schema_operation_is_fuzzed(schema: Any) -> None:
    ops = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert ops == set(OPERATIONS), "a new endpoint needs a share of the fuzz budget"


def _steer(body: Any, problem: str, how: str) -> Any:
    """Point a generated body at the served model; with `real-problem`, also at a recorded
    trace, within the server's caps, so the rest of the generated body reaches generation."""
    if how == "as-is" or not isinstance(body, dict):
        return body
    body = {**body, "model": "replay"}
    if how != "real-problem":
        return body
    if isinstance(body.get("prompt"), str):
        body["prompt"] += problem
    msgs = body.get("messages")
    if isinstance(msgs, list) and msgs and all(isinstance(m, dict) for m in msgs):
        texts = [
            {**m, "content": m.get("content") if isinstance(m.get("content"), str) else ""}
            for m in msgs[:-1]
        ]
        body["messages"] = [*texts, {**msgs[-1], "role": "user", "content": problem}]
    for key in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(key), int) and body[key] > MAX_TOKENS_CAP:
            body[key] = MAX_TOKENS_CAP
    tts = body.get("tts")
    if isinstance(tts, dict):
        tts = {k: v for k, v in tts.items() if k != "pool"}
        if isinstance(tts.get("n_branches"), int) and tts["n_branches"] > MAX_BRANCHES:
            tts["n_branches"] = MAX_BRANCHES
        body["tts"] = tts
    return body


def _error_of(body: Any) -> dict[str, Any]:
    """The `error` object of an OpenAI error body (asserting its shape)."""
    assert isinstance(body, dict), str(body)[:500]
    assert isinstance(body.get("error"), dict), str(body)[:500]
    error: dict[str, Any] = body["error"]
    assert isinstance(error.get("message"), str), error
    assert error["message"], error
    assert isinstance(error.get("type"), str), error
    assert error["type"], error
    assert {"param", "code"} <= error.keys(), error
    return error


def _sse_events(response: requests.Response) -> list[str]:
    lines = [ln for ln in response.text.split("\n") if ln.strip()]
    assert lines, response.text[-300:]
    assert lines[-1] == "data: [DONE]", response.text[-300:]
    return [ln[len("data: ") :] for ln in lines[:-1]]


def _judge(case: Any, response: requests.Response, counts: Counter[str]) -> None:
    status = response.status_code
    label = f"{case.method} {case.path}"
    media = response.headers.get("content-type", "")
    assert status < 500, f"{label} -> {status}: {response.text[:500]}"
    counts[f"{label} {status}"] += 1
    if status >= 400:
        _error_of(response.json())
    elif media.startswith("text/event-stream"):
        for event in _sse_events(response):
            data = json.loads(event)
            if "error" in data:
                error = _error_of(data)
                assert error["type"] not in SERVER_ERROR_TYPES, data
                counts[f"{label} sse-error {error['type']}"] += 1
    elif media.startswith("application/json"):
        case.validate_response(response, checks=[response_schema_conformance])


def _budget(op: tuple[str, str], mode: GenerationMode) -> int:
    share = OPERATIONS[op] * CASES
    if op in WITH_INPUT:
        share /= 2  # half positive, half negative
    return max(3, round(share))


@pytest.mark.parametrize(
    ("op", "mode"),
    [
        pytest.param(op, mode, id=f"{op[0]} {op[1]} {mode.value}")
        for op in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode is GenerationMode.POSITIVE or op in WITH_INPUT
    ],
)
def test_operation_survives_fuzzing(
    schema: Any,
    service: RunningService,
    tally: Counter[str],
    op: tuple[str, str],
    mode: GenerationMode,
) -> None:
    operation = schema[op[1]][op[0]]
    problems = _problems()
    session = requests.Session()
    slowest = 0.0

    @settings(
        max_examples=_budget(op, mode),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(
        case=operation.as_strategy(generation_mode=mode),
        how=st.sampled_from(["as-is", "real-model", "real-problem"]),
        problem=st.sampled_from(problems),
    )
    def run(case: Any, how: str, problem: str) -> None:
        nonlocal slowest
        if case.body is not None and op[0] == "POST":
            case.body = _steer(case.body, problem, how)
        # Sent with our own session, not `case.call`: its transport stops reading an event
        # stream after a few events, and the whole stream is what must be well formed.
        kwargs = case.as_transport_kwargs(base_url=service.url)
        start = time.monotonic()
        response = session.request(**kwargs, timeout=(5.0, REQUEST_TIMEOUT_S))
        elapsed = time.monotonic() - start
        slowest = max(slowest, elapsed)
        try:
            assert elapsed < REQUEST_TIMEOUT_S, f"took {elapsed:.1f}s"
            _judge(case, response, tally)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nReproduce with: {case.as_curl_command()}") from None

    run()
    tally[f"slowest {op[0]} {op[1]} (ms)"] = max(
        tally[f"slowest {op[0]} {op[1]} (ms)"], round(slowest * 1e3)
    )


def test_service_is_healthy_and_idle_after_fuzzing(service: RunningService) -> None:
    """Runs last in this module (pytest keeps file order): nothing leaked, nothing stuck."""
    deadline = time.monotonic() + 20
    while True:
        pools = httpx.get(f"{service.url}/v1/pools", timeout=10).json()["data"]
        inflight = sum(p["inflight_requests"] for p in pools)
        if inflight == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert inflight == 0
    assert httpx.get(f"{service.url}/health", timeout=10).status_code == 200
    assert service.proc.poll() is None
