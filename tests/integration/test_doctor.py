"""`tts-orchestrator doctor` against a real deployment on this box.

The deployment: a Ray head started with `ray start --head` (token authentication on, as
Ray does by default when a token exists), a redis-server, and the real service joined to
that cluster with a replay pool and two llama.cpp pools (one plain, one with ngram
speculation). The doctor is run as the CLI command and as a library against it, and against
configs that lie about the deployment (wrong model, wrong speculation, dead Redis / Ray).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from benchmarks.service import RunningService, cpu_pool, free_port, replay_pool, start_service
from tts_orchestrator.config import Settings
from tts_orchestrator.doctor.checks import (
    CheckResult,
    CheckStatus,
    DeploymentDoctor,
    DoctorOptions,
    DoctorReport,
)
from tts_orchestrator.doctor.cli import doctor
from tts_orchestrator.state.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration

RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def ray_env() -> Iterator[dict[str, str]]:
    """Token auth for every Ray process of this module (head, service, doctor's probe)."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    yield RAY_ENV
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def ray_head(ray_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Ray cluster in its own process group (stopped by that group's id).

    Its own --temp-dir: `ray start` records its address in `<temp-dir>/ray_current_cluster`,
    and a plain `ray.init()` anywhere on the machine would otherwise join this cluster.
    """
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ttsray", dir="/tmp")  # short: Ray puts sockets in it
    log = (tmp_path_factory.mktemp("ray-head") / "ray.log").open("wb")
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=2",
        "--include-dashboard=false",
        f"--dashboard-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--block",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, "ray start exited"
            if b"Ray runtime started" in Path(log.name).read_bytes():
                break
            time.sleep(0.5)
        else:
            raise AssertionError("Ray head did not start")
        yield address
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
async def redis_url() -> AsyncIterator[str]:
    async with EmbeddedRedis() as server:
        yield server.url


def _pools() -> list[dict[str, object]]:
    small = {"n_parallel": 2, "n_ctx": 2048, "threads": 1}
    ngram = {
        **cpu_pool("cpu-ngram", **small),
        "speculative": {"method": "ngram", "num_speculative_tokens": 4},
    }
    return [replay_pool(), cpu_pool("cpu-plain", **small), ngram]


@pytest.fixture(scope="module")
def deployment(
    ray_head: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningService, Settings]]:
    config = {"pools": _pools(), "redis": {"url": redis_url}, "ray": {"address": ray_head}}
    service = start_service(config, tmp_path_factory.mktemp("doctor-service"))
    try:
        yield service, Settings(**service.config)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def worker_urls(deployment: tuple[RunningService, Settings]) -> dict[str, str]:
    service, _ = deployment
    pools = httpx.get(f"{service.url}/v1/pools", timeout=10).json()["data"]
    return {p["name"]: p["processes"][0]["url"] for p in pools if p.get("processes")}


async def _run(settings: Settings, **options: object) -> DoctorReport:
    return await DeploymentDoctor(settings, DoctorOptions(**options)).run()  # type: ignore[arg-type]


def _row(report: DoctorReport, check: str, target_part: str) -> CheckResult:
    rows = [r for r in report.results if r.check == check and target_part in r.target]
    assert len(rows) == 1, f"{check}/{target_part}: {report.model_dump_json(indent=1)}"
    return rows[0]


def _with(settings: Settings, pool: str, **changes: object) -> Settings:
    """`settings` with one pool changed (e.g. pointed at a worker by URL)."""
    data = settings.model_dump()
    for p in data["pools"]:
        if p["name"] == pool:
            p.update(changes)
    return Settings(**data)


# -- the healthy deployment --------------------------------------------------------------------
def test_cli_reports_the_deployment_as_json(
    deployment: tuple[RunningService, Settings], tmp_path: Path
) -> None:
    service, _ = deployment
    app = typer.Typer()
    app.command()(doctor)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(service.config))  # YAML is a superset of JSON
    result = CliRunner().invoke(app, ["--config", str(config), "--api", service.url, "--json"])
    report = DoctorReport.model_validate_json(result.output)
    statuses = {(r.check, r.target): r.status for r in report.results}
    assert _row(report, "redis", "redis://").status is CheckStatus.OK
    assert _row(report, "ray", "127.0.0.1").status is CheckStatus.OK
    assert _row(report, "api", "/health").status is CheckStatus.OK
    assert _row(report, "worker", "replay").status is CheckStatus.SKIP
    workers = [r for r in report.results if r.check == "worker" and r.target.startswith("http")]
    assert len(workers) == 2, statuses
    assert all(r.status is CheckStatus.OK for r in workers), statuses
    # the exit code says whether any check failed
    assert result.exit_code == (0 if report.ok else 1), result.output


async def test_ray_row_counts_the_cluster(deployment: tuple[RunningService, Settings]) -> None:
    _, settings = deployment
    report = await _run(settings)
    ray_row = _row(report, "ray", settings.ray.address or "?")
    assert ray_row.status is CheckStatus.OK
    assert "1 nodes alive" in ray_row.detail
    assert "Ray 2." in ray_row.detail


async def test_clock_against_redis_is_in_sync(deployment: tuple[RunningService, Settings]) -> None:
    _, settings = deployment
    clock = _row(await _run(settings), "clock", "redis://")
    assert clock.status is CheckStatus.OK
    skew_ms = float(clock.detail.split("=")[1].split("ms")[0])
    assert abs(skew_ms) < 100  # same machine, same clock


async def test_speculation_is_read_from_each_worker(
    deployment: tuple[RunningService, Settings], worker_urls: dict[str, str]
) -> None:
    service, settings = deployment
    report = await _run(settings, api_url=service.url)
    plain = _row(report, "speculative", worker_urls["cpu-plain"])
    ngram = _row(report, "speculative", worker_urls["cpu-ngram"])
    assert plain.status is CheckStatus.OK
    assert "0/2 slots speculative" in plain.detail
    assert ngram.status is CheckStatus.OK
    assert "2/2 slots speculative" in ngram.detail


async def test_served_model_names_match_the_config(
    deployment: tuple[RunningService, Settings], worker_urls: dict[str, str]
) -> None:
    service, settings = deployment
    report = await _run(settings, api_url=service.url)
    for pool in ("cpu-plain", "cpu-ngram"):
        assert _row(report, "model", worker_urls[pool]).status is CheckStatus.OK


# -- deployments that do not match their config ------------------------------------------------
async def test_wrong_model_name_fails(
    deployment: tuple[RunningService, Settings], worker_urls: dict[str, str]
) -> None:
    _, settings = deployment
    url = worker_urls["cpu-plain"]
    lying = _with(settings, "cpu-plain", model="qwen3-8b", urls=[url], launch=None)
    report = await _run(lying)
    row = _row(report, "model", url)
    assert row.status is CheckStatus.FAIL
    assert "'qwen3-8b'" in row.detail
    assert not report.ok


async def test_speculation_mismatch_fails(
    deployment: tuple[RunningService, Settings], worker_urls: dict[str, str]
) -> None:
    _, settings = deployment
    url = worker_urls["cpu-plain"]
    lying = _with(
        settings,
        "cpu-plain",
        urls=[url],
        launch=None,
        speculative={"method": "ngram", "num_speculative_tokens": 4},
    )
    row = _row(await _run(lying), "speculative", url)
    assert row.status is CheckStatus.FAIL
    assert "0/2 slots speculative" in row.detail


async def test_dead_worker_fails(deployment: tuple[RunningService, Settings]) -> None:
    _, settings = deployment
    url = f"http://127.0.0.1:{free_port()}"
    report = await _run(_with(settings, "cpu-plain", urls=[url], launch=None), timeout_s=2)
    assert _row(report, "worker", url).status is CheckStatus.FAIL


async def test_unreachable_redis_fails_fast(deployment: tuple[RunningService, Settings]) -> None:
    _, settings = deployment
    data = settings.model_dump()
    data["redis"]["url"] = f"redis://127.0.0.1:{free_port()}/0"
    start = time.monotonic()
    report = await _run(Settings(**data), timeout_s=1)
    assert _row(report, "redis", "redis://").status is CheckStatus.FAIL
    assert time.monotonic() - start < 10
    assert not report.ok


async def test_unreachable_ray_fails_within_the_timeout() -> None:
    settings = Settings(ray={"address": f"127.0.0.1:{free_port()}"})  # type: ignore[arg-type]
    start = time.monotonic()
    report = await _run(settings, ray_timeout_s=15)
    row = _row(report, "ray", "127.0.0.1")
    assert row.status is CheckStatus.FAIL
    assert time.monotonic() - start < 30


async def test_api_missing_a_pool_fails(deployment: tuple[RunningService, Settings]) -> None:
    service, settings = deployment
    data = settings.model_dump()
    data["pools"].append({**replay_pool("not-deployed")})
    report = await _run(Settings(**data), api_url=service.url)
    assert _row(report, "api", "not-deployed").status is CheckStatus.FAIL
