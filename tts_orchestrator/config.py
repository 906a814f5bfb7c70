"""Root configuration: one pydantic-settings model composed of documented sub-configs.

Sources, highest priority first: explicit keyword arguments, ``TTS_*`` environment variables
(nested with ``__``, e.g. ``TTS_SERVER__PORT=9000``), the YAML file, field defaults.
This module is the only reader of the environment; everything else receives config objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tts_orchestrator.exceptions import ConfigError
from tts_orchestrator.modes import ModesConfig
from tts_orchestrator.planning import PlannerSettings
from tts_orchestrator.security.config import SecurityConfig

EngineKind = Literal["llama_cpp", "vllm", "openai", "replay"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Section):
    """The HTTP API."""

    host: str = Field("127.0.0.1", description="Bind address (loopback unless configured).")
    port: int = Field(8000, ge=0, le=65535, description="Listen port (0 picks a free one).")
    request_timeout_s: float = Field(600.0, gt=0, description="Hard deadline of one request.")
    max_body_bytes: int = Field(4 << 20, gt=0, description="Larger request bodies get 413.")
    max_prompt_tokens: int = Field(32768, gt=0, description="Longer prompts get 413.")
    max_tokens_cap: int = Field(32768, gt=0, description="Upper bound for `max_tokens`.")
    default_max_tokens: int = Field(1024, gt=0, description="`max_tokens` when a request omits it.")
    shutdown_grace_s: float = Field(
        5.0, ge=0, description="On SIGTERM: how long running requests may finish before cancel."
    )


class SpeculativeConfig(_Section):
    """Speculative decoding a pool's workers are started with (an engine-wide setting)."""

    method: Literal["none", "draft", "ngram", "eagle", "eagle3", "mtp"] = "none"
    num_speculative_tokens: int = Field(0, ge=0, le=64, description="Depth k.")
    draft_model: str | None = Field(None, description="Catalog name or path of the draft model.")

    @model_validator(mode="after")
    def _consistent(self) -> SpeculativeConfig:
        if self.method == "none" and self.num_speculative_tokens:
            raise ValueError("num_speculative_tokens needs a speculative method")
        if self.method == "draft" and not self.draft_model:
            raise ValueError("method 'draft' needs draft_model")
        return self


class LaunchSpec(_Section):
    """How to start a pool's worker processes (managed by Ray on nodes with the resources)."""

    replicas: int = Field(1, ge=1, description="Worker processes in this pool.")
    bind_host: str = Field(
        "127.0.0.1", description="Address workers listen on (a private address on a cluster)."
    )
    model_path: str = Field(..., description="Catalog model name (see `models list`) or a path.")
    n_parallel: int = Field(4, ge=1, description="Parallel slots (llama.cpp) / max sequences.")
    n_ctx: int = Field(8192, ge=256, description="Total context; llama.cpp splits it across slots.")
    threads: int = Field(2, ge=1, description="CPU threads for decoding.")
    num_cpus: float = Field(0.0, ge=0, description="Ray CPUs reserved per worker process.")
    num_gpus: float = Field(0.0, ge=0, description="Ray GPUs reserved per worker process.")
    python: str | None = Field(
        None, description="Interpreter for the worker (vLLM runs from its own venv)."
    )
    extra_args: list[str] = Field(default_factory=list, description="Extra engine CLI args.")
    startup_timeout_s: float = Field(180.0, gt=0)
    restart: bool = Field(True, description="Restart a worker process that exits.")


class ReplayConfig(_Section):
    """The replay engine: streams recorded traces (tests and benchmarks, never the default)."""

    traces: list[str] = Field(default_factory=list, description="JSONL files of recorded traces.")
    tokens_per_s: float = Field(200.0, gt=0, description="Per-stream token rate.")
    max_parallel: int = Field(64, ge=1, description="Concurrent streams before queueing.")


class PoolConfig(_Section):
    """One pool of workers of the same model and speculative setting."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    engine: EngineKind = "llama_cpp"
    model: str = Field(..., description="Model name served to clients (`/v1/models`).")
    model_family: str = Field("generic", description="Family in the thinking-marker table.")
    urls: list[str] = Field(default_factory=list, description="Already-running workers.")
    launch: LaunchSpec | None = Field(None, description="Managed workers to start instead.")
    replay: ReplayConfig | None = None
    speculative: SpeculativeConfig = Field(default_factory=SpeculativeConfig)
    direct_stream: bool = Field(
        True,
        description="Stream tokens from the workers straight into the API process when it can "
        "reach them (the pool actor still places branches and counts load); off: through Ray.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> PoolConfig:
        if self.engine == "replay":
            if self.replay is None:
                raise ValueError("engine 'replay' needs a `replay` section")
        elif bool(self.urls) == (self.launch is not None):
            raise ValueError("give exactly one of `urls` or `launch`")
        return self


class RedisConfig(_Section):
    url: str | None = Field(None, description="Redis URL; unset starts a private redis-server.")
    data_dir: str | None = Field(
        None,
        description="Where the private redis-server keeps its append-only file (fsync every "
        "second; default ~/.local/share/tts-orchestrator/redis). Unused with `url`.",
    )
    record_ttl_s: int = Field(86400, gt=0, description="TTL of request records.")
    socket_timeout_s: float = Field(2.0, gt=0, description="Fail fast instead of hanging.")


class RayConfig(_Section):
    address: str | None = Field(None, description="Cluster address; unset starts local Ray.")
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (default: all).")
    namespace: str = "tts-orchestrator"


class ModelsConfig(_Section):
    dir: str | None = Field(
        None, description="Where pulled models live (default ~/.cache/tts-orchestrator/models)."
    )


class TrimConfig(_Section):
    """TrimR trimming: the verifier service and the rule thresholds."""

    default: bool = Field(False, description="Trim requests that do not say `tts.trim`.")
    verifier_workers: int = Field(
        1, ge=0, description="Verifier Ray actors (0: no service; trimming never fires)."
    )
    batch: int = Field(64, ge=1, description="Checks a verifier takes per micro-batch.")
    rules: dict[str, Any] = Field(
        default_factory=dict, description="TrimRConfig overrides (overthink_m, ...)."
    )


class TtsDefaults(_Section):
    """Server-side defaults for the per-request `tts` options."""

    n_branches: int = Field(1, ge=1, le=64)
    max_branches: int = Field(16, ge=1, le=256, description="Cap on `tts.n_branches`.")
    answer_budget: int = Field(
        512, ge=1, description="Tokens allowed for the answer after thinking is cut short."
    )
    equivalence_timeout_s: float = Field(
        3.0, gt=0, description="Per-comparison timeout of math-verify (in a worker process)."
    )


class Settings(BaseSettings):
    """The whole configuration of one orchestrator deployment."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    server: ServerConfig = Field(default_factory=ServerConfig)
    pools: list[PoolConfig] = Field(default_factory=list)
    redis: RedisConfig = Field(default_factory=RedisConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    tts: TtsDefaults = Field(default_factory=TtsDefaults)
    trim: TrimConfig = Field(default_factory=TrimConfig)
    policy: PlannerSettings = Field(default_factory=PlannerSettings)
    modes: ModesConfig = Field(default_factory=ModesConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)

    @model_validator(mode="after")
    def _unique_pools(self) -> Settings:
        names = [p.name for p in self.pools]
        if len(names) != len(set(names)):
            raise ValueError(f"pool names must be unique: {names}")
        return self

    def pool(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load_settings` layers YAML < environment < overrides itself and passes the result.
        return (init_settings,)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def env_overrides(environ: Mapping[str, str], prefix: str = "TTS_") -> dict[str, Any]:
    """`TTS_SERVER__PORT=9000` → {"server": {"port": 9000}}; values are parsed as YAML."""
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(prefix) or len(key) == len(prefix):
            continue
        path = key[len(prefix) :].lower().split("__")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings: YAML file < `TTS_*` environment < keyword overrides.

    Raises ConfigError naming the first invalid field.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a mapping at the top level")
        data = loaded
    env = {k: v for k, v in env_overrides(os.environ).items() if k in Settings.model_fields}
    data = _merge(_merge(data, env), overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        raise ConfigError(f"invalid config field `{where}`: {first['msg']}") from exc
