"""Errors of authentication and of per-key limits, in the service's one error tree.

TTSError
├── AuthenticationError (401)   missing, malformed, unknown or revoked API key
├── RateLimited (429)           a per-key limit is reached; carries ``retry_after_s``
└── KeyNotFound (404)           no API key with that id (the `keys` CLI)

Both carry the HTTP headers a client needs (``WWW-Authenticate`` / ``Retry-After``), which
:mod:`tts_orchestrator.api.errors` adds to the response.
"""

from __future__ import annotations

import math
from enum import StrEnum

from tts_orchestrator.exceptions import TTSError


class SecurityError(TTSError):
    """Base of the security errors (each sets its response headers through ``headers()``)."""


class AuthenticationError(SecurityError):
    status_code = 401
    error_type = "authentication_error"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class LimitKind(StrEnum):
    """Which limit turned a request away (the error's ``code``)."""

    RATE = "rate_limit_exceeded"
    CONCURRENCY = "concurrency_limit_exceeded"
    TOKEN_BUDGET = "token_budget_exhausted"


class RateLimited(SecurityError):
    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, kind: LimitKind, retry_after_s: float):
        super().__init__(message, code=kind.value)
        self.kind = kind
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        # Retry-After takes whole seconds; never tell a client to retry at once.
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class KeyNotFound(TTSError):
    status_code = 404
    error_type = "not_found_error"
