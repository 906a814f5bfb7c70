"""Run the real service (`tts-orchestrator serve`) as a subprocess, for tests and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningService:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    config: dict[str, Any]

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_service(
    config: dict[str, Any], workdir: Path, *, timeout_s: float = 240, src: Path | None = None
) -> RunningService:
    """``src`` runs the service from another source tree (a baseline checkout, say) instead of
    this one; such a tree may predate ``redis.data_dir``, so its Redis keeps its own default."""
    config = dict(config)
    config.setdefault("server", {})
    config["server"] = {**config["server"], "port": free_port()}
    redis = config.setdefault("redis", {})
    if src is None and redis.get("url") is None and redis.get("data_dir") is None:
        # Never the user's data directory: each service keeps its own private Redis data.
        config["redis"] = {**redis, "data_dir": str(workdir / "redis")}
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    log_path = workdir / "service.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tts_orchestrator", "serve", "-c", str(cfg_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=src,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}
        | ({"PYTHONPATH": str(src.resolve())} if src is not None else {}),
    )
    service = RunningService(
        url=f"http://127.0.0.1:{config['server']['port']}",
        proc=proc,
        log_path=log_path,
        config=config,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}:\n{service.log_tail()}")
        try:
            if httpx.get(f"{service.url}/health", timeout=2).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    service.stop()
    raise RuntimeError(f"service not healthy after {timeout_s}s:\n{service.log_tail()}")


REPO = Path(__file__).resolve().parents[1]


def replay_pool(
    name: str = "replay", *, traces: list[str] | None = None, tokens_per_s: float = 200.0
) -> dict[str, Any]:
    """A pool on the replay engine over recorded (or test) traces: deterministic."""
    files = traces or [str(p) for p in sorted((REPO / "evals" / "data" / "traces").glob("*.jsonl"))]
    return {
        "name": name,
        "engine": "replay",
        "model": "replay",
        "model_family": "qwen3",
        "replay": {"traces": files, "tokens_per_s": tokens_per_s, "max_parallel": 256},
    }


def cpu_pool(name: str = "cpu-smollm2", **launch: Any) -> dict[str, Any]:
    return {
        "name": name,
        "engine": "llama_cpp",
        "model": "smollm2-135m-instruct",
        "model_family": "generic",
        "launch": {
            "model_path": "smollm2-135m-instruct",
            "n_parallel": 4,
            "n_ctx": 4096,
            "threads": 2,
            **launch,
        },
    }
