"""Render a model's chat template locally (jinja2, sandboxed), as HF tokenizers do.

Rendering in the API process keeps a round trip to the worker off the time-to-first-token
path; the template itself comes from the worker once (llama.cpp `/props`, a vLLM model folder).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel

from tts_orchestrator.exceptions import RequestError


class ChatTemplateInfo(BaseModel):
    """A worker's chat template and the special tokens it refers to."""

    template: str
    bos_token: str = ""
    eos_token: str = ""


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    """A compiled chat template. Thread-safe and cheap to call."""

    def __init__(self, info: ChatTemplateInfo) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self._template = env.from_string(info.template)
        self._info = info

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        try:
            return self._template.render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=self._info.bos_token,
                eos_token=self._info.eos_token,
                **dict(template_kwargs or {}),
            )
        except TemplateError as exc:
            raise RequestError(
                f"chat template rejected the messages: {exc}", param="messages"
            ) from exc
