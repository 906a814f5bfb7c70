"""Root configuration: one pydantic-settings model composed of documented sub-configs.

Sources, highest priority first: explicit keyword arguments, ``TTS_*`` environment variables
(nested with ``__``, e.g. ``TTS_SERVER__PORT=9000``), the YAML file, field defaults.
This module is the only reader of the environment; everything else receives config objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tts_orchestrator.config.modes import ModesConfig
from tts_orchestrator.config.planning import PlannerSettings
from tts_orchestrator.config.pools import PoolConfig
from tts_orchestrator.config.runtime import ModelsConfig, RayConfig, RedisConfig
from tts_orchestrator.config.security import SecurityConfig
from tts_orchestrator.config.server import ServerConfig
from tts_orchestrator.config.tts import TrimConfig, TtsDefaults
from tts_orchestrator.exceptions import ConfigError


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
