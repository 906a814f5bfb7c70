"""The `redis`, `ray` and `models` sections: where state, actors and model files live."""

from __future__ import annotations

from pydantic import Field

from tts_orchestrator.config._base import Section


class RedisConfig(Section):
    url: str | None = Field(None, description="Redis URL; unset starts a private redis-server.")
    data_dir: str | None = Field(
        None,
        description="Where the private redis-server keeps its append-only file (fsync every "
        "second; default ~/.local/share/tts-orchestrator/redis). Unused with `url`.",
    )
    record_ttl_s: int = Field(86400, gt=0, description="TTL of request records.")
    socket_timeout_s: float = Field(2.0, gt=0, description="Fail fast instead of hanging.")


class RayConfig(Section):
    address: str | None = Field(None, description="Cluster address; unset starts local Ray.")
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (default: all).")
    namespace: str = "tts-orchestrator"


class ModelsConfig(Section):
    dir: str | None = Field(
        None, description="Where pulled models live (default ~/.cache/tts-orchestrator/models)."
    )
