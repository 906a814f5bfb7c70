"""Which worker URLs only the worker's own node can reach (the direct data path's test)."""

from __future__ import annotations

import pytest

from tts_orchestrator.actors.direct import is_loopback


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.0.0.2:8080/", True),
        ("http://localhost:9000", True),
        ("http://[::1]:8000", True),
        ("http://10.0.3.7:8000", False),
        ("http://worker-3.cluster.local:8000", False),
        ("http://0.0.0.0:8000", False),
    ],
)
def test_loopback_urls(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback
