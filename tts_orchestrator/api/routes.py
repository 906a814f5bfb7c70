"""HTTP routes: OpenAI-compatible endpoints plus request records, health and metrics."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from tts_orchestrator.actors.calls import call
from tts_orchestrator.api.deps import MetricsDep, OrchestratorDep, ServicesDep, StoreDep
from tts_orchestrator.api.security import Admitted, Authenticated, authenticated
from tts_orchestrator.api.streaming import EventStreamResponse, collect, sse_stream
from tts_orchestrator.exceptions import RequestError, RequestNotFound, TTSError
from tts_orchestrator.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
)
from tts_orchestrator.security.auth import AuthContext, recorded_tokens
from tts_orchestrator.security.redaction import mark_sensitive
from tts_orchestrator.state.records import Endpoint, RequestRecord
from tts_orchestrator.state.schema import is_valid_request_id

router = APIRouter()

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _serve(
    orchestrator: OrchestratorDep,
    body: ChatCompletionRequest | CompletionRequest,
    endpoint: Endpoint,
    auth: AuthContext,
) -> Response | ChatCompletionResponse | CompletionResponse:
    texts = (
        [m.text() for m in body.messages]
        if isinstance(body, ChatCompletionRequest)
        else [body.prompt]
    )
    mark_sensitive(*texts)
    try:
        prepared = await orchestrator.prepare(body, endpoint, owner=auth.key_id, limits=auth.limits)
    except TTSError as exc:
        orchestrator.metrics.errors.labels(exc.error_type).inc()
        raise
    # Charged when the response is over (the dependency's exit), from the request record.
    auth.charge_on_exit(functools.partial(recorded_tokens, orchestrator.store, prepared.id))
    if body.stream:
        return EventStreamResponse(
            sse_stream(orchestrator, prepared, include_usage=body.include_usage),
            headers=_SSE_HEADERS,
        )
    try:
        return await collect(orchestrator, prepared)
    except TTSError as exc:
        orchestrator.metrics.errors.labels(exc.error_type).inc()
        raise


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, orchestrator: OrchestratorDep, auth: Admitted
) -> Response | ChatCompletionResponse | CompletionResponse:
    return await _serve(orchestrator, body, Endpoint.CHAT, auth)


@router.post("/v1/completions", response_model=None)
async def completions(
    body: CompletionRequest, orchestrator: OrchestratorDep, auth: Admitted
) -> Response | ChatCompletionResponse | CompletionResponse:
    return await _serve(orchestrator, body, Endpoint.COMPLETIONS, auth)


@router.get("/v1/models", dependencies=[Depends(authenticated)])
async def list_models(orchestrator: OrchestratorDep) -> ModelList:
    return ModelList(
        data=[ModelCard(id=model, pools=pools) for model, pools in orchestrator.models().items()]
    )


@router.get("/v1/pools", dependencies=[Depends(authenticated)])
async def list_pools(orchestrator: OrchestratorDep) -> dict[str, object]:
    """Pools with their workers' health, load and processes (an operator's view)."""
    handles = list(orchestrator.pools.values())
    statuses = await asyncio.gather(*(h.status() for h in handles))
    verifiers = await asyncio.gather(
        *(call(w.stats.remote()) for w in orchestrator.verifier_workers), return_exceptions=True
    )
    return {
        "object": "list",
        "data": [
            {
                "name": h.config.name,
                "model": h.config.model,
                "engine": h.config.engine,
                "speculative": h.config.speculative.model_dump(),
                **s,
            }
            for h, s in zip(handles, statuses, strict=True)
        ],
        "verifiers": [v if isinstance(v, dict) else {"error": repr(v)} for v in verifiers],
    }


def _checked_id(request_id: str) -> str:
    if not is_valid_request_id(request_id):
        raise RequestError(f"malformed request id {request_id[:80]!r}", param="request_id")
    return request_id


async def _visible_record(request_id: str, store: StoreDep, auth: Authenticated) -> RequestRecord:
    """The record, if this caller may see it: a request made with an API key belongs to that
    key; to any other key it does not exist (404, so ids cannot be probed)."""
    record = await store.get_request(_checked_id(request_id))
    if record.owner is not None and auth.key_id is not None and record.owner != auth.key_id:
        raise RequestNotFound(f"no request with id {request_id!r}")
    return record


VisibleRecord = Annotated[RequestRecord, Depends(_visible_record)]


@router.get("/v1/requests/{request_id}")
async def get_request(record: VisibleRecord) -> RequestRecord:
    return record


@router.delete("/v1/requests/{request_id}")
async def cancel_request(
    request_id: str, record: VisibleRecord, store: StoreDep
) -> dict[str, object]:
    if not record.status.terminal:
        await store.publish_cancel(request_id, "cancelled by DELETE /v1/requests")
    return {
        "id": request_id,
        "object": "request.cancel",
        "status": record.status.value,
        "cancelled": not record.status.terminal,
    }


@router.get("/health")
async def health(services: ServicesDep) -> JSONResponse:
    checks: dict[str, object] = {}
    ok = True
    try:
        await services.store.ping()
        checks["redis"] = "ok"
    except TTSError as exc:
        ok, checks["redis"] = False, exc.message
    if services.embedded_redis is not None:  # supervised: how often it had to be restarted
        checks["redis_embedded"] = services.embedded_redis.status()
    pools = services.orchestrator.pools
    statuses = await asyncio.gather(*(h.status() for h in pools.values()), return_exceptions=True)
    for name, status in zip(pools, statuses, strict=True):
        if isinstance(status, BaseException):
            ok, checks[f"pool:{name}"] = False, repr(status)
            continue
        healthy = sum(1 for w in status["workers"] if w["healthy"])
        checks[f"pool:{name}"] = f"{healthy}/{len(status['workers'])} workers healthy"
        ok = ok and healthy > 0
    return JSONResponse(
        {"status": "ok" if ok else "degraded", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics")
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
