"""Every shipped config validates, and the speculative pools launch the engine they describe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tts_orchestrator.backends.launcher import COMMAND_BUILDERS
from tts_orchestrator.config import PoolConfig, Settings, load_settings
from tts_orchestrator.config.modes import ProbeCheck
from tts_orchestrator.config.pools import ReplayTokenizer
from tts_orchestrator.models.catalog import default_catalog
from verifiers.traces import load_traces
from verifiers.traces.tokens import TokenCounter

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
    assert "none" in methods
    assert len(methods) >= 2


def _cpu_speculative() -> Settings:
    return load_settings(CONFIGS / "cpu-speculative.yaml")


def test_cpu_speculative_pools() -> None:
    settings = _cpu_speculative()
    plain, draft = settings.pool("plain"), settings.pool("draft")
    catalog = default_catalog()
    assert plain.model == draft.model == "qwen2.5-coder-1.5b-instruct"
    assert plain.launch is not None
    assert draft.launch is not None
    assert plain.launch.model_path in catalog
    assert draft.launch.model_path in catalog
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


# -- replay-reasoning: recorded fast answers and thinkers served as modes ------------------------
REPO = CONFIGS.parents[1]


@pytest.fixture(scope="module")
def qwen() -> TokenCounter:
    return TokenCounter.qwen25()


def test_replay_reasoning_serves_recorded_thinkers_with_fast_records(qwen: TokenCounter) -> None:
    settings = load_settings(CONFIGS / "replay-reasoning.yaml")
    families = {pool.model: pool.model_family for pool in settings.pools}
    assert families == {"qwq-32b": "qwq", "r1-distill-qwen-32b": "deepseek_r1"}
    for pool in settings.pools:
        assert pool.engine == "replay"
        assert pool.replay is not None
        assert pool.replay.tokenizer is ReplayTokenizer.QWEN25
        traces = load_traces(REPO / path for path in pool.replay.traces)
        fast = {t.problem for t in traces if t.thinking_delimiters is None}
        slow = {t.problem for t in traces if t.thinking_delimiters is not None}
        assert fast == slow, "every problem has both modes"
        assert len(fast) == 388 + 52, "every problem has both modes"
        assert {t.model for t in traces if t.problem in fast} >= {"Qwen2.5-32B-Instruct"}
        thinking = sorted((t.output for t in traces if t.thinking_delimiters), key=len)
        longest = max(qwen.count_many(thinking[-5:]))  # the longest texts (tokens ~ characters)
        assert longest <= settings.server.default_max_tokens, "slow mode streams whole traces"


def test_replay_reasoning_probes_read_whole_gsm8k_fast_answers(qwen: TokenCounter) -> None:
    """Live stage 3 judges the probe; offline judges the whole fast answer: the cap keeps them
    the same on GSM8K."""
    settings = load_settings(CONFIGS / "replay-reasoning.yaml")
    modes = settings.modes
    assert modes.probe_check is ProbeCheck.ANSWER_SIGNALS
    assert modes.probe_samples == 1
    fast = load_traces([REPO / "evals/data/traces/mip_qwen2.5-32b-instruct_gsm8k.jsonl"])
    counts = qwen.count_many([t.output for t in fast])
    assert max(counts) <= modes.probe_max_tokens
    assert settings.server.default_max_tokens >= modes.probe_max_tokens
