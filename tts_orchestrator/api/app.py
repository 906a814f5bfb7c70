"""App factory and lifespan: the routes, error handling and limits over a runtime's services."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI, Request

from tts_orchestrator.api.body_limit import BodySizeLimit
from tts_orchestrator.api.deps import Services
from tts_orchestrator.api.errors import install_error_handlers
from tts_orchestrator.api.routes import router
from tts_orchestrator.api.runtime import cluster_runtime
from tts_orchestrator.api.security import install_security
from tts_orchestrator.config import Settings
from tts_orchestrator.exceptions import TTSError

#: What the app runs on: settings -> the services, built on enter and closed on exit.
Runtime = Callable[[Settings], AbstractAsyncContextManager[Services]]

log = logging.getLogger(__name__)


def _count_error(request: Request, exc: TTSError) -> None:
    """Errors raised before a route runs (401, 429) still reach the error metric."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is not None:
        services.metrics.errors.labels(exc.error_type).inc()


def build_app(settings: Settings, *, runtime: Runtime | None = None) -> FastAPI:
    """The ASGI app for `settings`; nothing is started until its lifespan runs, which enters
    ``runtime`` (default: :func:`~tts_orchestrator.api.runtime.cluster_runtime`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (runtime or cluster_runtime)(settings) as services:
            app.state.services = services
            log.info("tts-orchestrator ready on pools %s", sorted(services.orchestrator.pools))
            yield

    app = FastAPI(title="tts-orchestrator", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodySizeLimit, max_bytes=settings.server.max_body_bytes)
    install_error_handlers(app)
    install_security(app, settings.security, on_error=_count_error)
    app.include_router(router)
    return app
