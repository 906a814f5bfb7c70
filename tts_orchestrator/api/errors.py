"""Translate errors to OpenAI-schema HTTP responses, at the edge only."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tts_orchestrator.exceptions import TTSError
from tts_orchestrator.protocol import ErrorDetail, ErrorResponse

log = logging.getLogger(__name__)


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    return ErrorResponse(
        error=ErrorDetail(message=message, type=error_type, param=param, code=code)
    ).model_dump()


def tts_error_body(exc: TTSError) -> dict[str, object]:
    return error_body(exc.message, exc.error_type, param=exc.param, code=exc.code)


def sse_error(exc: TTSError) -> str:
    return f"data: {json.dumps(tts_error_body(exc))}\n\n"


def _loc(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TTSError)
    async def _tts(request: Request, exc: TTSError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning(
                "%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message
            )
        return JSONResponse(tts_error_body(exc), status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        where = _loc(tuple(first.get("loc", ("body",))))
        msg = f"invalid field `{where}`: {first.get('msg', 'invalid')}"
        return JSONResponse(error_body(msg, "invalid_request_error", param=where), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal server error", "internal_error"), status_code=500)
