"""Awaiting Ray actor calls from async code: our own errors re-raised, Ray failures mapped."""

from __future__ import annotations

from typing import Any

from ray.exceptions import RayError, RayTaskError

from tts_orchestrator.exceptions import TTSError, WorkerError


def unwrap(exc: BaseException) -> BaseException:
    """Turn a Ray task error into the exception raised inside the actor."""
    if isinstance(exc, RayTaskError) and exc.cause is not None:
        cause: BaseException = exc.cause
        return cause
    return exc


async def call(ref: Any) -> Any:
    """Await an actor call, re-raising our own errors and mapping Ray failures."""
    try:
        return await ref
    except RayError as exc:
        inner = unwrap(exc)
        if isinstance(inner, TTSError):
            raise inner from None
        raise WorkerError(f"pool actor failed: {inner!r}") from exc
