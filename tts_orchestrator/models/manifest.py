"""The models directory's manifest: which catalog model is verified at which path.

A JSON file (`manifest.json`) in the models directory. Each entry remembers the size and mtime
the file had when its SHA-256 last matched the pin, so a later start trusts an unchanged file
without hashing a gigabyte again. Anything odd (missing, unreadable, other version) reads as an
empty manifest: every entry can be rebuilt by verifying again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tts_orchestrator.models.catalog import CatalogModel

MANIFEST_FILENAME = "manifest.json"
LOCK_FILENAME = ".lock"


class ManifestEntry(BaseModel):
    """One verified model file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    path: Path = Field(..., description="Absolute path of the verified GGUF.")
    sha256: str = Field(..., description="The pin the file matched.")
    size_bytes: int
    mtime_ns: int = Field(..., description="mtime of the file when it was verified.")
    assembled: bool = Field(
        ..., description="True: assembled into the models dir; False: used in place."
    )
    verified_at: datetime

    def matches(self, model: CatalogModel) -> bool:
        """True when this entry still vouches for `model`: same pin, file unchanged since."""
        if self.sha256 != model.sha256 or self.size_bytes != model.size_bytes:
            return False
        try:
            stat = self.path.stat()
        except OSError:
            return False
        return stat.st_size == self.size_bytes and stat.st_mtime_ns == self.mtime_ns


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    models: dict[str, ManifestEntry] = Field(default_factory=dict)


class ManifestStore:
    """Reads and atomically rewrites the manifest of one models directory."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self.path = models_dir / MANIFEST_FILENAME

    def load(self) -> Manifest:
        try:
            return Manifest.model_validate_json(self.path.read_bytes())
        except (OSError, ValidationError):
            return Manifest()

    def entry(self, name: str) -> ManifestEntry | None:
        return self.load().models.get(name)

    def record(self, entry: ManifestEntry) -> None:
        manifest = self.load()
        manifest.models[entry.name] = entry
        self._save(manifest)

    def forget(self, name: str) -> None:
        manifest = self.load()
        if manifest.models.pop(name, None) is not None:
            self._save(manifest)

    def _save(self, manifest: Manifest) -> None:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.models_dir, prefix=".manifest-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(manifest.model_dump_json(indent=2))
                fh.write("\n")
            os.chmod(tmp, 0o644)  # mkstemp creates 0600
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive lock on the models dir: replicas starting together pull only once."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with open(self.models_dir / LOCK_FILENAME, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
