"""Every shipped config validates, and the speculative pools launch the engine they describe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tts_orchestrator.backends.launcher import COMMAND_BUILDERS
from tts_orchestrator.config import PoolConfig, Settings, load_settings
from tts_orchestrator.models.catalog import default_catalog

CONFIGS = Path(__file__).resolve().parents[3] / "deploy" / "configs"
CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


def _command(pool: PoolConfig) -> list[str]:
    assert pool.launch is not None
    draft = Path("/models/draft") if pool.speculative.draft_model else None
    return COMMAND_BUILDERS[pool.engine](pool, pool.launch, Path("/models/target"), 9999, draft)


def _flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_the_shipped_configs_are_found() -> None:
    names = {p.name for p in CONFIG_FILES}
    assert {"cpu-default.yaml", "cpu-speculative.yaml", "gpu-vllm-speculative.yaml"} <= names
    assert "ascend-vllm.yaml" in names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.stem for p in CONFIG_FILES])
def test_config_validates_and_launches(path: Path) -> None:
    settings = load_settings(path)
    assert settings.pools, "a deployment config serves at least one pool"
    for pool in settings.pools:
        if pool.launch is not None:
            cmd = _command(pool)
            assert str(pool.launch.n_parallel) in cmd


@pytest.mark.parametrize(
    "path",
    [p for p in CONFIG_FILES if "speculative" in p.stem or "ascend" in p.stem],
    ids=lambda p: p.stem,
)
def test_speculative_pools_share_one_target_model(path: Path) -> None:
    settings = load_settings(path)
    by_model: dict[str, set[str]] = {}
    for pool in settings.pools:
        by_model.setdefault(pool.model, set()).add(pool.speculative.method)
    methods = next(iter(by_model.values()))
    assert len(by_model) == 1, "the policy picks among pools of the same target"
    assert "none" in methods and len(methods) >= 2


def _cpu_speculative() -> Settings:
    return load_settings(CONFIGS / "cpu-speculative.yaml")


def test_cpu_speculative_pools() -> None:
    settings = _cpu_speculative()
    plain, draft = settings.pool("plain"), settings.pool("draft")
    catalog = default_catalog()
    assert plain.model == draft.model == "qwen2.5-coder-1.5b-instruct"
    assert plain.launch is not None and draft.launch is not None
    assert plain.launch.model_path in catalog and draft.launch.model_path in catalog
    assert draft.speculative.draft_model == "qwen2.5-coder-0.5b-instruct"
    assert draft.speculative.draft_model in catalog
    # identical workers apart from speculation: a fair comparison
    assert plain.launch == draft.launch
    assert "--spec-type" not in _command(plain)
    cmd = _command(draft)
    assert _flag(cmd, "--spec-type") == "draft"
    assert _flag(cmd, "--draft-model") == "/models/draft"
    assert _flag(cmd, "--draft-max") == str(draft.speculative.num_speculative_tokens) == "4"


@pytest.mark.parametrize(
    ("config", "pool", "expected"),
    [
        pytest.param("gpu-vllm-speculative", "plain", None, id="gpu-plain"),
        pytest.param(
            "gpu-vllm-speculative",
            "ngram",
            {"num_speculative_tokens": 4, "method": "ngram"},
            id="gpu-ngram",
        ),
        pytest.param(
            "gpu-vllm-speculative",
            "draft",
            {"num_speculative_tokens": 4, "model": "/models/draft"},
            id="gpu-draft",
        ),
        pytest.param(
            "gpu-vllm-speculative",
            "eagle",
            {
                "num_speculative_tokens": 3,
                "method": "eagle",
                "model": "/models/EAGLE-LLaMA3.1-Instruct-8B",
            },
            id="gpu-eagle",
        ),
        pytest.param(
            "gpu-vllm-speculative",
            "eagle3",
            {
                "num_speculative_tokens": 3,
                "method": "eagle3",
                "model": "/models/EAGLE3-LLaMA3.1-Instruct-8B",
            },
            id="gpu-eagle3",
        ),
        pytest.param(
            "ascend-vllm",
            "ngram",
            {"num_speculative_tokens": 4, "method": "ngram"},
            id="ascend-ngram",
        ),
        pytest.param(
            "ascend-vllm",
            "eagle3",
            {
                "num_speculative_tokens": 3,
                "method": "eagle3",
                "model": "/models/EAGLE3-LLaMA3.1-Instruct-8B",
            },
            id="ascend-eagle3",
        ),
    ],
)
def test_vllm_speculative_config(
    config: str, pool: str, expected: dict[str, object] | None
) -> None:
    cmd = _command(load_settings(CONFIGS / f"{config}.yaml").pool(pool))
    if expected is None:
        assert "--speculative-config" not in cmd
    else:
        assert json.loads(_flag(cmd, "--speculative-config")) == expected
