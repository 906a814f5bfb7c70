"""Fake model packages: small chunk files laid out like the PyPI wheels, on a temporary sys.path."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tts_orchestrator.models.catalog import CatalogModel, ModelFile
from tts_orchestrator.models.pull import PackageInstaller, PullProgress, PullStage

CHUNK_SIZES = (4096, 4096, 1234)


def payload(size: int) -> bytes:
    """Deterministic, non-repeating-per-chunk bytes with a GGUF magic."""
    body = hashlib.shake_256(b"fake model").digest(size - 4)
    return b"GGUF" + body


@dataclass
class FakeModel:
    """A catalog model whose packages live under `site` (prepended to sys.path)."""

    model: CatalogModel
    site: Path
    files: list[Path]
    good: list[bytes]

    def restore(self) -> None:
        for path, data in zip(self.files, self.good, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    @property
    def content(self) -> bytes:
        return b"".join(self.good)


def _write_dist_info(site: Path, dist: str, version: str) -> None:
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")


@pytest.fixture
def make_fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeModel]:
    """Build a fake chunked (or single-file) model; package names are unique per test."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    tag = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10]
    counter = iter(range(1000))

    def build(
        *,
        chunk_sizes: Sequence[int] = CHUNK_SIZES,
        installed: bool = True,
        name: str = "fake-model",
    ) -> FakeModel:
        prefix = f"fakemodel_{tag}_{next(counter)}_part"
        data = payload(sum(chunk_sizes))
        good, files, model_files, packages = [], [], [], []
        offset = 0
        for i, size in enumerate(chunk_sizes, start=1):
            pkg = f"{prefix}{i}"
            rel = f"data/part{i:02d}.bin"
            good.append(data[offset : offset + size])
            offset += size
            files.append(site / pkg / rel)
            model_files.append(ModelFile(package=pkg, path=rel))
            packages.append(f"{pkg.replace('_', '-')}==1.0")
        model = CatalogModel(
            name=name,
            description="fake",
            context_length=2048,
            quantization="Q4_0",
            packages=tuple(packages),
            files=tuple(model_files),
            gguf_filename=f"{name}.gguf",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            license_note="test data",
        )
        fake = FakeModel(model=model, site=site, files=files, good=good)
        if installed:
            fake.restore()
            for requirement in packages:
                _write_dist_info(site, *requirement.split("=="))
        return fake

    return build


@dataclass
class RecordingInstaller(PackageInstaller):
    """Records pip calls; `on_install` plays pip's part (e.g. restoring good files)."""

    on_install: Callable[[Sequence[str], bool], None] | None = None
    calls: list[tuple[tuple[str, ...], bool]] = field(default_factory=list)

    def install(self, requirements: Sequence[str], *, force: bool) -> None:
        self.calls.append((tuple(requirements), force))
        if self.on_install is not None:
            self.on_install(requirements, force)


@dataclass
class RecordingProgress(PullProgress):
    stages: list[PullStage] = field(default_factory=list)
    bytes_done: int = 0

    def start(self, stage: PullStage, *, description: str, total_bytes: int | None) -> None:
        self.stages.append(stage)

    def advance(self, nbytes: int) -> None:
        self.bytes_done += nbytes


@pytest.fixture
def installer() -> RecordingInstaller:
    return RecordingInstaller()


@pytest.fixture
def progress() -> RecordingProgress:
    return RecordingProgress()
