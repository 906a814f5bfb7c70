"""Check a running deployment from the outside: what `tts-orchestrator doctor` reports.

Checks, each a :class:`CheckResult` row:

* **redis** - PING round trip to ``redis.url`` (skipped when the service runs a private Redis).
* **clock** - local clock against Redis ``TIME`` and each worker's HTTP ``Date`` header (1 s
  resolution), so request records and latency profiles written on different nodes line up.
* **ray** - ``ray.init(address=...)`` in a subprocess under a timeout (a wrong address makes Ray
  wait for a long time, and a process that joined a cluster cannot leave it cleanly): alive
  nodes, Ray version, GPUs against what the pools' ``launch`` specs reserve.
* **api** - the API's ``/health`` and whether ``/v1/pools`` lists every configured pool.
* **worker / model / speculative** - per worker of each pool: ``/health``; served model names
  (``/v1/models``) against the pool's ``model``; speculative decoding as the worker reports it
  (llama.cpp: ``/slots`` ``speculative`` per slot; vLLM: speculative counters on ``/metrics``,
  which vLLM registers only when it runs with a ``--speculative-config``).

Workers are the pool's ``urls``, the URLs registered in Redis under the pool's worker key, and,
with an API URL, the processes the API reports for ``launch`` pools. One :class:`WorkerProbe`
subclass per engine kind, chosen through :data:`PROBES`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import email.utils
import json
import sys
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, Field

from tts_orchestrator.backends.openai_http import parse_prometheus
from tts_orchestrator.config import EngineKind, PoolConfig, Settings
from tts_orchestrator.state.schema import KeySchema


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


class CheckResult(BaseModel):
    """One row of the report."""

    check: str = Field(..., description="redis, clock, ray, api, worker, model, speculative")
    target: str = Field(..., description="What was checked: a URL, a pool, an address.")
    status: CheckStatus
    detail: str = ""
    latency_ms: float | None = None


class DoctorReport(BaseModel):
    results: list[CheckResult]

    @property
    def ok(self) -> bool:
        return not any(r.status is CheckStatus.FAIL for r in self.results)

    def by_check(self, check: str) -> list[CheckResult]:
        return [r for r in self.results if r.check == check]


class DoctorOptions(BaseModel):
    api_url: str | None = Field(None, description="A running API, to find `launch` workers.")
    timeout_s: float = Field(5.0, gt=0, description="Per HTTP / Redis call.")
    ray_timeout_s: float = Field(60.0, gt=0, description="For joining the Ray cluster.")
    max_skew_s: float = Field(1.0, gt=0, description="Clock skew beyond this fails.")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1e3, 2)


def _skew_status(skew_s: float, limit_s: float) -> CheckStatus:
    if abs(skew_s) > limit_s:
        return CheckStatus.FAIL
    return CheckStatus.WARN if abs(skew_s) > limit_s / 2 else CheckStatus.OK


# -- workers -----------------------------------------------------------------------------------
class WorkerProbe(abc.ABC):
    """Checks one worker of one engine kind; subclasses say how it names models and speculates."""

    engine: ClassVar[str]

    def __init__(self, client: httpx.AsyncClient, options: DoctorOptions) -> None:
        self.client = client
        self.options = options

    async def get(self, url: str) -> httpx.Response:
        return await self.client.get(url, timeout=self.options.timeout_s)

    async def run(self, pool: PoolConfig, url: str) -> list[CheckResult]:
        start = time.perf_counter()
        try:
            r = await self.get(f"{url}/health")
        except httpx.HTTPError as exc:
            return [
                CheckResult(check="worker", target=url, status=CheckStatus.FAIL, detail=repr(exc))
            ]
        health = CheckResult(
            check="worker",
            target=url,
            status=CheckStatus.OK if r.status_code == 200 else CheckStatus.FAIL,
            detail=f"{pool.name} ({self.engine}): /health {r.status_code}",
            latency_ms=_ms(start),
        )
        if health.status is CheckStatus.FAIL:
            return [health]
        results = [health, await self._guard("model", url, self.check_model(pool, url))]
        results.append(await self._guard("speculative", url, self.check_speculative(pool, url)))
        clock = self._date_skew(r, url)
        return results + ([clock] if clock is not None else [])

    async def _guard(
        self, check: str, url: str, probe: Awaitable[tuple[CheckStatus, str]]
    ) -> CheckResult:
        start = time.perf_counter()
        try:
            status, detail = await probe
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            status, detail = CheckStatus.FAIL, f"unreadable: {exc!r}"
        return CheckResult(
            check=check, target=url, status=status, detail=detail, latency_ms=_ms(start)
        )

    def _date_skew(self, response: httpx.Response, url: str) -> CheckResult | None:
        header = response.headers.get("date")
        if not header:
            return None
        with contextlib.suppress(TypeError, ValueError):
            remote = email.utils.parsedate_to_datetime(header).timestamp()
            skew = time.time() - remote - 0.5  # a whole-second header is 0.5 s behind on average
            limit = self.options.max_skew_s + 1.0
            return CheckResult(
                check="clock",
                target=url,
                status=_skew_status(skew, limit),
                detail=f"local - worker Date = {skew:+.1f} s (±1 s resolution)",
            )
        return None

    async def check_model(self, pool: PoolConfig, url: str) -> tuple[CheckStatus, str]:
        served = await self.served_models(url)
        if pool.model in served:
            return CheckStatus.OK, f"serves {pool.model!r}"
        return CheckStatus.FAIL, f"expected {pool.model!r}; worker serves {sorted(served)}"

    async def served_models(self, url: str) -> set[str]:
        data = (await self.get(f"{url}/v1/models")).raise_for_status().json()
        return {str(m["id"]) for m in data.get("data", [])}

    @abc.abstractmethod
    async def check_speculative(self, pool: PoolConfig, url: str) -> tuple[CheckStatus, str]:
        """Compare the worker's own report of speculative decoding with the pool's config."""

    async def spec_counters(self, url: str, prefix: str) -> dict[str, float] | None:
        """The `<prefix>spec_decode_*_total` counters on /metrics (None: not registered)."""
        text = (await self.get(f"{url}/metrics")).raise_for_status().text
        raw = parse_prometheus(text)
        names = ("num_drafts_total", "num_draft_tokens_total", "num_accepted_tokens_total")
        found = {
            n: raw[f"{prefix}spec_decode_{n}"] for n in names if f"{prefix}spec_decode_{n}" in raw
        }
        return found or None


def _acceptance(counters: dict[str, float]) -> str:
    drafted = counters.get("num_draft_tokens_total", 0.0)
    accepted = counters.get("num_accepted_tokens_total", 0.0)
    if not drafted:
        return "no drafts yet"
    return f"{accepted:.0f}/{drafted:.0f} draft tokens accepted ({accepted / drafted:.0%})"


class LlamaCppProbe(WorkerProbe):
    engine = "llama_cpp"

    async def served_models(self, url: str) -> set[str]:
        data = (await self.get(f"{url}/v1/models")).raise_for_status().json()
        names = {str(m["id"]) for m in data.get("data", [])}
        for m in data.get("data", []):
            names.update(str(a) for a in m.get("aliases") or [])
        return names

    async def check_speculative(self, pool: PoolConfig, url: str) -> tuple[CheckStatus, str]:
        r = await self.get(f"{url}/slots")
        if r.status_code != 200:
            return CheckStatus.WARN, f"/slots {r.status_code}: start the worker with slots on"
        slots = r.json()
        flags = [bool(s.get("speculative")) for s in slots]
        want = pool.speculative.method != "none"
        counters = await self.spec_counters(url, "llamacpp:") or {}
        detail = (
            f"{sum(flags)}/{len(flags)} slots speculative; config {pool.speculative.method}"
            f" k={pool.speculative.num_speculative_tokens}; {_acceptance(counters)}"
        )
        return (
            CheckStatus.OK if flags and all(f == want for f in flags) else CheckStatus.FAIL
        ), detail


class VLLMProbe(WorkerProbe):
    engine = "vllm"

    async def check_speculative(self, pool: PoolConfig, url: str) -> tuple[CheckStatus, str]:
        counters = await self.spec_counters(url, "vllm:")
        want = pool.speculative.method != "none"
        if counters is None:
            status = CheckStatus.FAIL if want else CheckStatus.OK
            return status, f"no speculative metrics; config {pool.speculative.method}"
        status = CheckStatus.OK if want else CheckStatus.FAIL
        return status, f"speculative metrics present; config {pool.speculative.method}; " + (
            _acceptance(counters)
        )


class OpenAIProbe(WorkerProbe):
    """Any OpenAI-compatible server: health and model names only."""

    engine = "openai"

    async def check_speculative(self, pool: PoolConfig, url: str) -> tuple[CheckStatus, str]:
        return CheckStatus.SKIP, "an OpenAI-compatible server does not report speculation"


#: Engine kind -> probe class; `replay` runs inside the pool actor and has no worker to probe.
PROBES: dict[EngineKind, type[WorkerProbe]] = {
    "llama_cpp": LlamaCppProbe,
    "vllm": VLLMProbe,
    "openai": OpenAIProbe,
}


# -- Ray ---------------------------------------------------------------------------------------
_RAY_SCRIPT = """
import json, sys
import ray
ray.init(address=sys.argv[1], namespace=sys.argv[2], log_to_driver=False,
         configure_logging=False)
nodes = [n for n in ray.nodes() if n.get("Alive")]
print(json.dumps({"version": ray.__version__, "nodes": len(nodes),
                  "resources": ray.cluster_resources()}))
"""


async def run_ray_probe(address: str, namespace: str, timeout_s: float) -> dict[str, Any]:
    """Join the cluster from a throw-away process; returns what it saw. Raises TimeoutError."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RAY_SCRIPT,
        address,
        namespace,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"exit {proc.returncode}: {tail[0][:300]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# -- the doctor --------------------------------------------------------------------------------
class DeploymentDoctor:
    """Runs every check of one deployment config; `run()` returns the report."""

    def __init__(
        self,
        settings: Settings,
        options: DoctorOptions | None = None,
        *,
        ray_probe: Callable[[str, str, float], Awaitable[dict[str, Any]]] = run_ray_probe,
    ) -> None:
        self.settings = settings
        self.options = options or DoctorOptions()
        self.keys = KeySchema()
        self._ray_probe = ray_probe

    async def run(self) -> DoctorReport:
        async with httpx.AsyncClient() as client:
            redis_results, registered = await self.check_redis()
            ray_results, (api_results, launched) = await asyncio.gather(
                self.check_ray(), self.check_api(client)
            )
            per_pool = await asyncio.gather(
                *(
                    self.check_pool(
                        client, pool, registered.get(pool.name, []) + launched.get(pool.name, [])
                    )
                    for pool in self.settings.pools
                )
            )
        results = redis_results + ray_results + api_results
        for rows in per_pool:
            results += rows
        return DoctorReport(results=results)

    # -- Redis and clocks ----------------------------------------------------------------------
    async def check_redis(self) -> tuple[list[CheckResult], dict[str, list[str]]]:
        """PING, clock skew against TIME, and the worker URLs registered per pool."""
        url = self.settings.redis.url
        if url is None:
            detail = "no redis.url: the service runs a private redis-server (see the api row)"
            return [
                CheckResult(check="redis", target="-", status=CheckStatus.SKIP, detail=detail)
            ], {}
        import redis.asyncio as aioredis
        from redis.exceptions import RedisError

        t = self.options.timeout_s
        client = aioredis.from_url(url, socket_timeout=t, socket_connect_timeout=t)
        target = _redact(url)
        try:
            pings = []
            for _ in range(3):
                start = time.perf_counter()
                await client.ping()
                pings.append(_ms(start))
            before = time.time()
            seconds, micros = await client.time()
            after = time.time()
            registered = {
                p.name: sorted(
                    k.decode() if isinstance(k, bytes) else str(k)
                    for k in await client.hkeys(self.keys.pool_workers(p.name))
                )
                for p in self.settings.pools
            }
        except (RedisError, OSError) as exc:
            return [
                CheckResult(check="redis", target=target, status=CheckStatus.FAIL, detail=repr(exc))
            ], {}
        finally:
            await client.aclose()
        skew = (before + after) / 2 - (seconds + micros / 1e6)
        return [
            CheckResult(
                check="redis",
                target=target,
                status=CheckStatus.OK,
                detail=f"PING ok ×{len(pings)}",
                latency_ms=sorted(pings)[len(pings) // 2],
            ),
            CheckResult(
                check="clock",
                target=target,
                status=_skew_status(skew, self.options.max_skew_s),
                detail=f"local - redis TIME = {skew * 1e3:+.1f} ms "
                f"(±{(after - before) * 500:.1f} ms)",
            ),
        ], registered

    # -- Ray -----------------------------------------------------------------------------------
    async def check_ray(self) -> list[CheckResult]:
        address = self.settings.ray.address
        if address is None:
            detail = "no ray.address: the API process starts a private local Ray"
            return [CheckResult(check="ray", target="-", status=CheckStatus.SKIP, detail=detail)]
        start = time.perf_counter()
        try:
            seen = await self._ray_probe(
                address, self.settings.ray.namespace, self.options.ray_timeout_s
            )
        except TimeoutError:
            detail = f"no answer within {self.options.ray_timeout_s:.0f}s"
            return [
                CheckResult(check="ray", target=address, status=CheckStatus.FAIL, detail=detail)
            ]
        except (RuntimeError, OSError, ValueError) as exc:
            return [
                CheckResult(check="ray", target=address, status=CheckStatus.FAIL, detail=str(exc))
            ]
        gpus = float(seen.get("resources", {}).get("GPU", 0.0))
        needed = sum(
            p.launch.num_gpus * p.launch.replicas
            for p in self.settings.pools
            if p.launch is not None
        )
        status = CheckStatus.OK if gpus >= needed else CheckStatus.WARN
        detail = (
            f"Ray {seen.get('version')}, {seen.get('nodes')} nodes alive, "
            f"{gpus:g} GPUs (pools reserve {needed:g})"
        )
        return [
            CheckResult(
                check="ray", target=address, status=status, detail=detail, latency_ms=_ms(start)
            )
        ]

    # -- API -----------------------------------------------------------------------------------
    async def check_api(
        self, client: httpx.AsyncClient
    ) -> tuple[list[CheckResult], dict[str, list[str]]]:
        """The API's health, its pools, and the URLs of the processes `launch` pools started."""
        api = self.options.api_url
        if api is None:
            detail = "no --api given: workers of `launch` pools cannot be found"
            return [
                CheckResult(check="api", target="-", status=CheckStatus.SKIP, detail=detail)
            ], {}
        api = api.rstrip("/")
        t = self.options.timeout_s
        start = time.perf_counter()
        try:
            health = await client.get(f"{api}/health", timeout=t)
            latency = _ms(start)
            pools = (await client.get(f"{api}/v1/pools", timeout=t)).raise_for_status().json()
        except (httpx.HTTPError, ValueError) as exc:
            return [
                CheckResult(check="api", target=api, status=CheckStatus.FAIL, detail=repr(exc))
            ], {}
        checks = (
            health.json().get("checks", {})
            if health.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        rows = [
            CheckResult(
                check="api",
                target=f"{api}/health",
                status=CheckStatus.OK if health.status_code == 200 else CheckStatus.FAIL,
                detail=f"{health.status_code} " + ", ".join(f"{k}: {v}" for k, v in checks.items()),
                latency_ms=latency,
            )
        ]
        served = {p["name"]: p for p in pools.get("data", [])}
        launched: dict[str, list[str]] = {}
        for pool in self.settings.pools:
            entry = served.get(pool.name)
            if entry is None:
                rows.append(
                    CheckResult(
                        check="api",
                        target=pool.name,
                        status=CheckStatus.FAIL,
                        detail=f"the API does not serve pool {pool.name}; it has {sorted(served)}",
                    )
                )
                continue
            urls = [p["url"] for p in entry.get("processes", []) if p.get("url")]
            launched[pool.name] = urls
        return rows, launched

    # -- pools ---------------------------------------------------------------------------------
    async def check_pool(
        self, client: httpx.AsyncClient, pool: PoolConfig, discovered: list[str]
    ) -> list[CheckResult]:
        probe_cls = PROBES.get(pool.engine)
        if probe_cls is None:
            detail = f"engine {pool.engine}: runs inside the pool actor, no worker process"
            return [
                CheckResult(
                    check="worker", target=pool.name, status=CheckStatus.SKIP, detail=detail
                )
            ]
        urls = list(dict.fromkeys(u.rstrip("/") for u in [*pool.urls, *discovered]))
        if not urls:
            status = CheckStatus.WARN if pool.launch is not None else CheckStatus.FAIL
            detail = "no worker URL known (a `launch` pool: pass --api)"
            return [CheckResult(check="worker", target=pool.name, status=status, detail=detail)]
        probe = probe_cls(client, self.options)
        rows = await asyncio.gather(*(probe.run(pool, u) for u in urls))
        return [r for per_url in rows for r in per_url]


def _redact(url: str) -> str:
    """A Redis URL without its password."""
    head, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{head}{sep}***@{rest.split('@', 1)[1]}"
