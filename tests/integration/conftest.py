from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.service import REPO, RunningService, cpu_pool, replay_pool, start_service

VOTE_TRACES = str(REPO / "tests" / "data" / "vote_traces.jsonl")


@pytest.fixture(scope="session")
def cpu_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The real service on the CPU default: llama.cpp + SmolLM2, private Redis, local Ray."""
    workdir = tmp_path_factory.mktemp("cpu-service")
    config = {
        "server": {"default_max_tokens": 64},
        "pools": [cpu_pool()],
        "ray": {"num_cpus": 2},
    }
    service = start_service(config, workdir)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def replay_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The real service (Redis, Ray) on the replay engine over hand-made vote traces."""
    workdir = tmp_path_factory.mktemp("replay-service")
    config = {
        "server": {"default_max_tokens": 4096},
        "pools": [replay_pool(traces=[VOTE_TRACES], tokens_per_s=400)],
        "ray": {"num_cpus": 2},
    }
    service = start_service(config, workdir)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
