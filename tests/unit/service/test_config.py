from __future__ import annotations

from pathlib import Path

import pytest

from tts_orchestrator.config import load_settings
from tts_orchestrator.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[3]


def test_shipped_cpu_default_is_valid() -> None:
    s = load_settings(REPO / "deploy" / "configs" / "cpu-default.yaml")
    pool = s.pool("cpu-smollm2")
    assert pool.engine == "llama_cpp"
    assert pool.launch is not None
    assert s.redis.url is None
    assert s.ray.address is None
    assert s.server.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"server": {"port": 70000}}, "server.port", id="port-range"),
        pytest.param({"server": {"bogus": 1}}, "server.bogus", id="unknown-field"),
        pytest.param({"pools": [{"name": "a", "model": "m"}]}, "pools.0", id="pool-without-source"),
        pytest.param(
            {
                "pools": [
                    {
                        "name": "a",
                        "model": "m",
                        "urls": ["http://x"],
                        "speculative": {"method": "draft"},
                    }
                ]
            },
            "pools.0.speculative",
            id="draft-without-model",
        ),
        pytest.param(
            {"pools": [{"name": "a b", "model": "m", "urls": ["u"]}]}, "pools.0.name", id="bad-name"
        ),
    ],
)
def test_invalid_config_names_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, **overrides)
    assert f"`{field}" in info.value.message


def test_duplicate_pool_names_rejected() -> None:
    pool = {"name": "a", "model": "m", "urls": ["http://127.0.0.1:1"]}
    with pytest.raises(ConfigError, match="unique"):
        load_settings(None, pools=[pool, pool])


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  port: 9000\n  host: 127.0.0.1\n")
    monkeypatch.setenv("TTS_SERVER__PORT", "9100")
    s = load_settings(cfg)
    assert s.server.port == 9100
    assert s.server.host == "127.0.0.1"


def test_env_variables_of_other_tools_are_not_config(monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. the fuzz test's case count: TTS_* names that are no config section are ignored.
    monkeypatch.setenv("TTS_FUZZ_CASES", "1200")
    monkeypatch.setenv("TTS_SERVER__PORT", "9101")
    assert load_settings(None).server.port == 9101


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(cfg)
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml")
