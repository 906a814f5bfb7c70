"""Configuration: the root settings and one module per section, importing no service logic.

``settings`` composes the sections and is the only reader of the environment; each other
module holds one section's pydantic models (``server``, ``pools``, ``runtime`` for Redis / Ray /
model files, ``tts`` for the request defaults and trimming, ``planning``, ``modes``,
``security``). The names below are re-exported so callers import from one place.
"""

from tts_orchestrator.config.modes import ModesConfig, UncertainAction
from tts_orchestrator.config.planning import PlannerSettings
from tts_orchestrator.config.pools import (
    EngineKind,
    LaunchSpec,
    PoolConfig,
    ReplayConfig,
    SpeculativeConfig,
)
from tts_orchestrator.config.runtime import ModelsConfig, RayConfig, RedisConfig
from tts_orchestrator.config.security import KeyLimits, SecurityConfig
from tts_orchestrator.config.server import ServerConfig
from tts_orchestrator.config.settings import Settings, env_overrides, load_settings
from tts_orchestrator.config.tts import TrimConfig, TtsDefaults

__all__ = [
    "EngineKind",
    "KeyLimits",
    "LaunchSpec",
    "ModelsConfig",
    "ModesConfig",
    "PlannerSettings",
    "PoolConfig",
    "RayConfig",
    "RedisConfig",
    "ReplayConfig",
    "SecurityConfig",
    "ServerConfig",
    "Settings",
    "SpeculativeConfig",
    "TrimConfig",
    "TtsDefaults",
    "UncertainAction",
    "env_overrides",
    "load_settings",
]
