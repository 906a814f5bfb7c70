"""The replay-reasoning service (deploy/configs/replay-reasoning.yaml) for integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from benchmarks.auto_live import service_config
from benchmarks.service import RunningService, start_service


@contextmanager
def replay_reasoning(
    tmp_path_factory: pytest.TempPathFactory, *, rate: float, name: str
) -> Iterator[RunningService]:
    """The shipped replay-reasoning config served at ``rate`` tokens/s per stream."""
    svc = start_service(service_config(rate=rate, concurrency=4), tmp_path_factory.mktemp(name))
    try:
        yield svc
    finally:
        svc.stop()
