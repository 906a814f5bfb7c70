"""The `security` section of the settings: API keys, their default limits, CORS, log hygiene.

Kept apart from :mod:`tts_orchestrator.config` so that the security package owns its knobs;
the root ``Settings`` composes it as ``security: SecurityConfig``. No I/O here: the pepper
arrives like every other setting (YAML or ``TTS_SECURITY__PEPPER``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class KeyLimits(BaseModel):
    """Limits of one API key; ``None`` means unlimited."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(
        60, ge=1, le=100_000, description="Requests admitted in any sliding 60 s window."
    )
    max_concurrent: int | None = Field(
        8, ge=1, le=10_000, description="Requests in flight at once, across all API replicas."
    )
    daily_tokens: int | None = Field(
        None,
        ge=1,
        description="Prompt + completion tokens over all branches per UTC day; the request "
        "that crosses it completes, later ones get 429 until midnight UTC.",
    )
    max_branches: int | None = Field(None, ge=1, description="Cap on `tts.n_branches`.")
    max_tokens: int | None = Field(None, ge=1, description="Cap on `max_tokens`.")


class SecurityConfig(BaseModel):
    """API keys and the other defences of the HTTP API."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description="Require an API key (`Authorization: Bearer` or `api-key`) on the /v1 "
        "endpoints. Keys live in Redis (`redis.url`, or the private server's `redis.data_dir`).",
    )
    pepper: SecretStr | None = Field(
        None,
        description="Server-side secret mixed into the key hash (HMAC-SHA256); set it with "
        "TTS_SECURITY__PEPPER. Changing it invalidates every issued key.",
    )
    default_limits: KeyLimits = Field(
        default_factory=KeyLimits, description="Limits of keys created without explicit ones."
    )
    lease_ttl_s: float = Field(
        30.0,
        ge=0.05,
        le=3600,
        description="A concurrency slot of a replica that died frees itself after this long; "
        "live requests renew theirs every third of it.",
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty turns CORS off."
    )
    log_prompts: bool = Field(
        False, description="Let prompt and message text into the logs (keys never are)."
    )
