"""Managed worker processes: start an engine server, wait for health, supervise, stop.

A `ManagedWorker` owns one engine process on a free loopback port. It restarts the process
when it exits (if configured), so a killed worker comes back on the same URL. The command
line of each engine kind is built by a function in `COMMAND_BUILDERS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tts_orchestrator.backends.llamacpp_server import die_with_parent
from tts_orchestrator.config import EngineKind, LaunchSpec, PoolConfig
from tts_orchestrator.exceptions import ConfigError, NoWorkerAvailable

log = logging.getLogger(__name__)

CommandBuilder = Callable[[PoolConfig, LaunchSpec, Path, int, Path | None], list[str]]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _llama_cpp_command(
    pool: PoolConfig, spec: LaunchSpec, model: Path, port: int, draft: Path | None
) -> list[str]:
    cmd = [
        spec.python or sys.executable,
        "-m",
        "tts_orchestrator.backends.llamacpp_server",
        "--model",
        str(model),
        "--host",
        spec.bind_host,
        "--port",
        str(port),
        "--parallel",
        str(spec.n_parallel),
        "--ctx",
        str(spec.n_ctx),
        "--threads",
        str(spec.threads),
        "--alias",
        pool.model,
    ]
    method = pool.speculative.method
    if method == "draft":
        cmd += ["--spec-type", "draft", "--draft-model", str(draft)]
    elif method == "ngram":
        cmd += ["--spec-type", "ngram"]
    elif method != "none":
        raise ConfigError(f"pool {pool.name}: llama.cpp has no speculative method {method!r}")
    if pool.speculative.num_speculative_tokens:
        cmd += ["--draft-max", str(pool.speculative.num_speculative_tokens)]
    return cmd + spec.extra_args


def _vllm_command(
    pool: PoolConfig, spec: LaunchSpec, model: Path, port: int, draft: Path | None
) -> list[str]:
    cmd = [
        spec.python or sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        pool.model,
        "--host",
        spec.bind_host,
        "--port",
        str(port),
        "--max-num-seqs",
        str(spec.n_parallel),
        "--max-model-len",
        str(spec.n_ctx),
        "--enable-prefix-caching",
    ]
    sc = pool.speculative
    if sc.method != "none":
        import json

        conf: dict[str, object] = {"num_speculative_tokens": sc.num_speculative_tokens}
        if sc.method == "draft":
            conf["model"] = str(draft)
        else:
            conf["method"] = sc.method
            if sc.draft_model:
                conf["model"] = sc.draft_model
        cmd += ["--speculative-config", json.dumps(conf)]
    return cmd + spec.extra_args


COMMAND_BUILDERS: dict[EngineKind, CommandBuilder] = {
    "llama_cpp": _llama_cpp_command,
    "vllm": _vllm_command,
}


def worker_env(spec: LaunchSpec) -> dict[str, str]:
    env = dict(os.environ)
    # OpenMP spin-waiting turns a shared 2-core box from ~16 to ~2 tokens/s.
    env.setdefault("OMP_WAIT_POLICY", "passive")
    env.setdefault("OMP_NUM_THREADS", str(spec.threads))
    env.setdefault("HF_HUB_OFFLINE", "1")
    repo_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH")) if p)
    return env


class ManagedWorker:
    """One supervised engine process on a loopback port."""

    def __init__(self, command: list[str], *, port: int, spec: LaunchSpec, name: str) -> None:
        self.command = command
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.spec = spec
        self.name = name
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._healthy = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        await self._spawn()
        await self.wait_healthy(self.spec.startup_timeout_s)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def _spawn(self) -> None:
        self._healthy.clear()
        log.info("starting worker %s: %s", self.name, " ".join(self.command))
        self._proc = await asyncio.create_subprocess_exec(
            *self.command,
            env=worker_env(self.spec),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    async def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self._proc is not None and self._proc.returncode is not None:
                    raise NoWorkerAvailable(
                        f"worker {self.name} exited with {self._proc.returncode} during startup"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(f"{self.url}/health", timeout=2.0)
                    if r.status_code == 200:
                        self._healthy.set()
                        return
                await asyncio.sleep(0.2)
        raise NoWorkerAvailable(f"worker {self.name} not healthy after {timeout_s:.0f}s")

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self._proc is not None
            code = await self._proc.wait()
            self._healthy.clear()
            if self._stopping or not self.spec.restart:
                return
            self.restarts += 1
            log.warning("worker %s exited (%s); restart #%d", self.name, code, self.restarts)
            try:
                await self._spawn()
                await self.wait_healthy(self.spec.startup_timeout_s)
            except NoWorkerAvailable:
                log.exception("worker %s failed to restart", self.name)
                await asyncio.sleep(1.0)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
