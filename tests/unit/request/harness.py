"""The whole request path in one process: the real app and orchestrator over scripted engines.

``Service`` builds the FastAPI app with :func:`inprocess_runtime` (in-process pools of
:class:`ScriptedBackend` workers, an in-memory state store, an in-process verifier) and talks to
it through ``httpx.ASGITransport``: no Redis, no Ray, no sockets, milliseconds per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tts_orchestrator.api.app import build_app
from tts_orchestrator.api.deps import Services
from tts_orchestrator.api.runtime import inprocess_runtime
from tts_orchestrator.backends.base import SamplingParams
from tts_orchestrator.backends.scripted import Script, ScriptedBackend
from tts_orchestrator.config import Settings
from tts_orchestrator.planning.store import ProfileStore
from tts_orchestrator.security.auth import Gatekeeper
from verifiers.judges import ThoughtJudge

MODEL = "m"


async def exact_equal(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def settings(
    *, family: str = "generic", pools: Sequence[str] = ("p",), **sections: Any
) -> Settings:
    data: dict[str, Any] = {
        "pools": [
            {
                "name": n,
                "engine": "llama_cpp",
                "model": MODEL,
                "model_family": family,
                "urls": [f"http://{n}.invalid"],
            }
            for n in pools
        ],
    }
    data.update(sections)
    return Settings(**data)


async def until(cond: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Poll the scripted engine's state (it has no event to wait on) for up to ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.002)


@dataclass(frozen=True)
class Branch:
    """What the branch with seed i streams: its text, the pause before each token, a failure,
    and per token its sampled logprob and its DeepConf confidence (one value for every token,
    or one per token; a sequence shorter than the text repeats its last value)."""

    text: str
    delay_s: float = 0.0
    fail_after: int | None = None
    logprob: float | Sequence[float] | None = None
    confidence: float | Sequence[float] | None = None


def _per_piece(value: float | Sequence[float] | None, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return tuple(float(value) for _ in range(n))
    values = list(value)
    return tuple(values[i] if i < len(values) else values[-1] for i in range(n))


def branches(*specs: Branch | str) -> Callable[[str, SamplingParams], Script]:
    """Branch i (seed i: requests set ``tts.seed = 0``) plays ``specs[i]``; a continuation
    (a prompt that already holds a branch's text) plays the text after it, closing thinking."""
    plays = [s if isinstance(s, Branch) else Branch(s) for s in specs]

    def play(prompt: str, params: SamplingParams) -> Script:
        spec = plays[(params.seed or 0) % len(plays)]
        pieces = Script.text(spec.text).pieces
        return Script(
            pieces=pieces,
            delay_s=spec.delay_s,
            fail_after=spec.fail_after,
            logprobs=_per_piece(spec.logprob, len(pieces)),
            confidences=_per_piece(spec.confidence, len(pieces)),
        )

    return play


def by_seed(
    texts: Mapping[int, str] | Sequence[str], **script: Any
) -> Callable[[str, SamplingParams], Script]:
    """Branch i (seed base + i, base 0 unless the request sets one) streams texts[i]."""
    seq = dict(enumerate(texts)) if not isinstance(texts, Mapping) else dict(texts)

    def play(prompt: str, params: SamplingParams) -> Script:
        seed = params.seed or 0
        return Script.text(seq[seed % len(seq)], **script)

    return play


@dataclass
class Service:
    settings: Settings
    workers: dict[str, list[ScriptedBackend]]
    judge: ThoughtJudge | None = None
    verifier_delay_s: float = 0.0
    gatekeeper: Gatekeeper | None = None
    profile_store: ProfileStore | None = None
    client: httpx.AsyncClient = field(init=False)
    services: Services = field(init=False)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[Service]:
        holder: dict[str, Services] = {}

        @contextlib.asynccontextmanager
        async def runtime(s: Settings) -> AsyncIterator[Services]:
            async with inprocess_runtime(
                s,
                pools=self.workers,
                equivalent=exact_equal,
                judge=self.judge,
                verifier_delay_s=self.verifier_delay_s,
                security=self.gatekeeper,
                profile_store=self.profile_store,
            ) as services:
                holder["s"] = services
                yield services

        app = build_app(self.settings, runtime=runtime)
        async with app.router.lifespan_context(app):
            self.services = holder["s"]
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                self.client = client
                yield self

    @property
    def worker(self) -> ScriptedBackend:
        return next(iter(self.workers.values()))[0]

    async def chat(self, content: str = "What is 2+3?", **body: Any) -> httpx.Response:
        payload = {"model": MODEL, "messages": [{"role": "user", "content": content}], **body}
        return await self.client.post("/v1/chat/completions", json=payload)

    async def stream(self, content: str = "What is 2+3?", **body: Any) -> list[dict[str, Any]]:
        payload = {
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            "stream": True,
            **body,
        }
        events: list[dict[str, Any]] = []
        async with self.client.stream("POST", "/v1/chat/completions", json=payload) as r:
            assert r.status_code == 200, await r.aread()
            events += [
                json.loads(line[6:])
                async for line in r.aiter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"
            ]
        return events

    def streaming_call(
        self, content: str = "hi", **body: Any
    ) -> tuple[asyncio.Task[None], asyncio.Event, list[dict[str, Any]]]:
        """A streamed chat request sent straight to the ASGI app, whose client goes away when
        the returned event is set: (the app's call, the event, the messages it sent)."""
        payload = {
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            "stream": True,
            **body,
        }
        requests = [{"type": "http.request", "body": json.dumps(payload).encode()}]
        gone = asyncio.Event()
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if requests:
                return requests.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
        }
        app = self.client._transport.app  # type: ignore[attr-defined]
        return asyncio.create_task(app(scope, receive, send)), gone, sent

    async def record(self, request_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/requests/{request_id}")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out


def service(
    texts: Sequence[str] | Callable[[str, SamplingParams], Script],
    *,
    n_parallel: int = 8,
    pools: Sequence[str] = ("p",),
    **kwargs: Any,
) -> Service:
    script = texts if callable(texts) else by_seed(texts)
    sections = {k: kwargs.pop(k) for k in list(kwargs) if k in Settings.model_fields}
    family = kwargs.pop("family", "generic")
    return Service(
        settings=settings(family=family, pools=pools, **sections),
        workers={n: [ScriptedBackend(script, name=f"{n}/0", n_parallel=n_parallel)] for n in pools},
        **kwargs,
    )


__all__ = ["MODEL", "Branch", "Service", "branches", "by_seed", "service", "settings", "until"]
