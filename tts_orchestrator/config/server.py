"""The `server` section: the HTTP API's address, deadlines and size limits."""

from __future__ import annotations

from pydantic import Field

from tts_orchestrator.config._base import Section


class ServerConfig(Section):
    """The HTTP API."""

    host: str = Field("127.0.0.1", description="Bind address (loopback unless configured).")
    port: int = Field(8000, ge=0, le=65535, description="Listen port (0 picks a free one).")
    request_timeout_s: float = Field(600.0, gt=0, description="Hard deadline of one request.")
    max_body_bytes: int = Field(4 << 20, gt=0, description="Larger request bodies get 413.")
    max_prompt_tokens: int = Field(32768, gt=0, description="Longer prompts get 413.")
    max_tokens_cap: int = Field(32768, gt=0, description="Upper bound for `max_tokens`.")
    default_max_tokens: int = Field(1024, gt=0, description="`max_tokens` when a request omits it.")
    shutdown_grace_s: float = Field(
        5.0, ge=0, description="On SIGTERM: how long running requests may finish before cancel."
    )
