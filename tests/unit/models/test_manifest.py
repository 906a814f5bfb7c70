from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tts_orchestrator.models.catalog import SMOLLM2_135M_INSTRUCT
from tts_orchestrator.models.manifest import ManifestEntry, ManifestStore


def _entry(path: Path, **changes: object) -> ManifestEntry:
    stat = path.stat()
    data = {
        "name": SMOLLM2_135M_INSTRUCT.name,
        "path": path,
        "sha256": SMOLLM2_135M_INSTRUCT.sha256,
        "size_bytes": SMOLLM2_135M_INSTRUCT.size_bytes,
        "mtime_ns": stat.st_mtime_ns,
        "assembled": True,
        "verified_at": datetime.now(UTC),
    } | changes
    return ManifestEntry.model_validate(data)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.gguf"
    with path.open("wb") as fh:
        fh.truncate(SMOLLM2_135M_INSTRUCT.size_bytes)  # sparse: only the size matters here
    return path


def test_record_and_forget_round_trip(tmp_path: Path, model_file: Path) -> None:
    store = ManifestStore(tmp_path / "models")
    entry = _entry(model_file)
    store.record(entry)
    assert ManifestStore(tmp_path / "models").entry(entry.name) == entry
    store.forget(entry.name)
    assert store.entry(entry.name) is None


@pytest.mark.parametrize(
    "content", [b"{not json", b'{"version": 2, "models": {}}', b"[]"], ids=["garbage", "v2", "list"]
)
def test_an_unreadable_manifest_reads_as_empty(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "manifest.json").write_bytes(content)
    assert ManifestStore(tmp_path).load().models == {}


def test_entry_matches_an_unchanged_file(model_file: Path) -> None:
    assert _entry(model_file).matches(SMOLLM2_135M_INSTRUCT)


def test_a_touched_file_needs_verifying_again(model_file: Path) -> None:
    entry = _entry(model_file)
    stat = model_file.stat()
    os.utime(model_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert not entry.matches(SMOLLM2_135M_INSTRUCT)


def test_a_new_pin_needs_verifying_again(model_file: Path) -> None:
    repinned = SMOLLM2_135M_INSTRUCT.model_copy(update={"sha256": "0" * 64})
    assert not _entry(model_file).matches(repinned)


def test_a_missing_file_does_not_match(model_file: Path) -> None:
    entry = _entry(model_file)
    model_file.unlink()
    assert not entry.matches(SMOLLM2_135M_INSTRUCT)


def test_the_manifest_is_written_readable_and_without_temp_files(
    tmp_path: Path, model_file: Path
) -> None:
    store = ManifestStore(tmp_path / "models")
    store.record(_entry(model_file))
    assert sorted(p.name for p in store.models_dir.iterdir()) == ["manifest.json"]
    assert store.path.stat().st_mode & 0o777 == 0o644
