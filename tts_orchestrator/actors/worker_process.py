"""A Ray actor body that launches one engine process on the node Ray placed it on.

Ray schedules it with the pool's resources (`num_gpus` for a vLLM replica), so the same code
runs the CPU default locally and GPU replicas across a cluster. Plain class: `ray.remote` is
applied in `actors.deploy`.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import ray

from tts_orchestrator.backends.launcher import COMMAND_BUILDERS, ManagedWorker, free_port
from tts_orchestrator.config import PoolConfig
from tts_orchestrator.exceptions import ConfigError


def _resolve(model: str, models_dir: Path | None) -> Path:
    from tts_orchestrator.models.pull import resolve_model_path

    return resolve_model_path(model, models_dir)


class WorkerProcess:
    """Owns one `ManagedWorker`; lives as long as the worker should."""

    def __init__(self, pool: PoolConfig, replica: int, models_dir: str | None = None) -> None:
        if pool.launch is None:
            raise ConfigError(f"pool {pool.name} has no launch spec")
        self.pool = pool
        self.replica = replica
        self.models_dir = Path(models_dir) if models_dir else None
        self.worker: ManagedWorker | None = None

    async def start(self) -> str:
        spec = self.pool.launch
        assert spec is not None
        builder = COMMAND_BUILDERS.get(self.pool.engine)
        if builder is None:
            raise ConfigError(f"engine {self.pool.engine!r} cannot be launched; give `urls`")
        if self.worker is not None and self.worker.is_running():
            return self.url()  # attached to an existing actor (another API replica)
        # Pulling may pip-install and hash a GGUF: keep it off the actor's event loop.
        model = await asyncio.to_thread(_resolve, spec.model_path, self.models_dir)
        draft_name = self.pool.speculative.draft_model
        draft = (
            await asyncio.to_thread(_resolve, draft_name, self.models_dir) if draft_name else None
        )
        port = free_port()
        self.worker = ManagedWorker(
            builder(self.pool, spec, model, port, draft),
            port=port,
            spec=spec,
            name=f"{self.pool.name}/{self.replica}",
        )
        await self.worker.start()
        return self.url()

    def url(self) -> str:
        assert self.worker is not None
        assert self.pool.launch is not None
        host = self.pool.launch.bind_host
        if host in ("0.0.0.0", "::"):  # reachable from other nodes on this node's address
            host = socket.gethostbyname(socket.gethostname())
        return f"http://{host}:{self.worker.port}"

    def node_id(self) -> str:
        """The Ray node this worker runs on (loopback URLs are reachable only from there)."""
        return str(ray.get_runtime_context().get_node_id())

    def status(self) -> dict[str, object]:
        w = self.worker
        return {
            "url": self.url() if w else None,
            "pid": w.pid if w else None,
            "running": bool(w and w.is_running()),
            "restarts": w.restarts if w else 0,
        }

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
