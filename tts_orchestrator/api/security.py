"""The API side of security: the key-checking dependencies, security error responses, CORS.

Two FastAPI dependencies call the :class:`~tts_orchestrator.security.auth.Gatekeeper`, both
no-ops while ``security.enabled`` is false:

- :data:`Authenticated` verifies the key only (listing models, pools, request records);
- :data:`Admitted` verifies it and admits the request against the key's limits. It is a
  dependency with ``yield``: FastAPI (>= 0.118) runs its exit after the response has been sent,
  so the concurrency lease is held for the whole life of a streaming response, and only then
  released and the request's tokens charged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from tts_orchestrator.api.deps import ServicesDep
from tts_orchestrator.api.errors import tts_error_body
from tts_orchestrator.config.security import SecurityConfig
from tts_orchestrator.security.auth import AuthContext, Gatekeeper
from tts_orchestrator.security.errors import SecurityError


async def get_gatekeeper(services: ServicesDep) -> Gatekeeper:
    return services.security


GatekeeperDep = Annotated[Gatekeeper, Depends(get_gatekeeper)]


async def authenticated(request: Request, gate: GatekeeperDep) -> AuthContext:
    return await gate.authenticate(request.headers)


async def admitted(request: Request, gate: GatekeeperDep) -> AsyncIterator[AuthContext]:
    auth = await gate.admit(request.headers)
    try:
        yield auth
    finally:
        await auth.close()


Authenticated = Annotated[AuthContext, Depends(authenticated)]
Admitted = Annotated[AuthContext, Depends(admitted)]


def install_security(
    app: FastAPI,
    config: SecurityConfig,
    *,
    on_error: Callable[[Request, SecurityError], None] | None = None,
) -> None:
    """Map security errors to responses with their headers (telling ``on_error``, e.g. to
    count them); add CORS if origins are set."""

    @app.exception_handler(SecurityError)
    async def _security_error(request: Request, exc: SecurityError) -> JSONResponse:
        if on_error is not None:
            on_error(request, exc)
        return JSONResponse(tts_error_body(exc), status_code=exc.status_code, headers=exc.headers())

    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=config.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "api-key", "content-type"],
            expose_headers=["retry-after"],
        )
