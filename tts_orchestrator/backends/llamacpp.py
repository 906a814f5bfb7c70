"""llama.cpp `llama-server` adapter (the embedded CPU default, via xllamacpp)."""

from __future__ import annotations

import asyncio
from typing import Any

from tts_orchestrator.backends.base import SamplingParams, WorkerMetrics
from tts_orchestrator.backends.chat_template import ChatTemplateInfo
from tts_orchestrator.backends.openai_http import OpenAIHTTPBackend
from tts_orchestrator.exceptions import WorkerError

_METRIC_NAMES = {
    "requests_running": "llamacpp:requests_processing",
    "requests_waiting": "llamacpp:requests_deferred",
    "prompt_tokens_total": "llamacpp:prompt_tokens_total",
    "prompt_tokens_cached_total": "llamacpp:prompt_tokens_cached_total",
    "generation_tokens_total": "llamacpp:tokens_predicted_total",
    "spec_draft_tokens_total": "llamacpp:spec_decode_num_draft_tokens_total",
    "spec_accepted_tokens_total": "llamacpp:spec_decode_num_accepted_tokens_total",
    "spec_drafts_total": "llamacpp:spec_decode_num_drafts_total",
}


class LlamaCppBackend(OpenAIHTTPBackend):
    """Parallel slots with continuous batching; closing a stream frees its slot."""

    def completion_body(self, prompt: str, params: SamplingParams) -> dict[str, Any]:
        body = super().completion_body(prompt, params)
        body["cache_prompt"] = True  # prefix reuse makes continuations cheap
        if params.grammar is not None:
            body["grammar"] = params.grammar
        return body

    def normalise_metrics(self, raw: dict[str, float]) -> WorkerMetrics:
        values = {field: raw.get(name, 0.0) for field, name in _METRIC_NAMES.items()}
        return WorkerMetrics(raw=raw, **values)

    async def tokenize(self, text: str) -> list[int]:
        data = await self._post_json("/tokenize", {"content": text, "add_special": False})
        return [int(t) for t in data["tokens"]]

    async def chat_template_info(self) -> ChatTemplateInfo:
        props = await self._get_json("/props")
        return ChatTemplateInfo(
            template=props.get("chat_template") or "",
            bos_token=props.get("bos_token") or "",
            eos_token=props.get("eos_token") or "",
        )

    async def settle(self, *, busy_at_most: int, timeout_s: float = 1.0) -> None:
        # A slot is picked by prompt similarity among IDLE slots only: wait for the aborted
        # request's slot to go idle, or the continuation misses its own cache.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            try:
                if await self.busy_slots() <= busy_at_most:
                    return
            except WorkerError:
                return
            await asyncio.sleep(0.01)

    async def busy_slots(self) -> int:
        """Slots currently processing (used to confirm an abort freed the engine)."""
        slots = await self._get_json("/slots")
        return sum(1 for s in slots if s.get("is_processing"))
