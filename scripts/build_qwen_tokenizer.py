"""Rebuild `verifiers/traces/data/qwen2.5-tokenizer.json.gz` from a Qwen2.5 GGUF's metadata.

No model hub is reachable from the project's machines, but every catalog Qwen2.5 GGUF carries its
byte-level BPE tokenizer (vocabulary, merges, token types) in its metadata. This script turns that
into a Hugging Face `tokenizers` JSON with the same pre-tokenizer as Qwen2's `tokenizer.json`
(NFC, the Qwen2 split regex, byte-level), and checks a round trip before writing.

    PYTHONPATH=. python -m tts_orchestrator models pull qwen2.5-coder-0.5b-instruct
    PYTHONPATH=. python scripts/build_qwen_tokenizer.py <path to the .gguf>

Needs `gguf` (the `vllm-cpu` extra); the result only needs `tokenizers`.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from gguf import GGUFReader
from tokenizers import Tokenizer

OUT = Path(__file__).resolve().parents[1] / "verifiers/traces/data/qwen2.5-tokenizer.json.gz"

# Qwen2's pre-tokenizer split (its tokenizer.json / llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4  # GGUF token types (5: unused padding rows)


def _field(reader: GGUFReader, key: str) -> object:
    field = reader.fields[key]
    return field.contents()


def build(gguf_path: Path) -> dict[str, object]:
    reader = GGUFReader(str(gguf_path))
    if (
        _field(reader, "tokenizer.ggml.model") != "gpt2"
        or _field(reader, "tokenizer.ggml.pre") != "qwen2"
    ):
        raise SystemExit(f"{gguf_path} does not carry a Qwen2 byte-level BPE tokenizer")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))  # type: ignore[call-overload]
    types = list(_field(reader, "tokenizer.ggml.token_type"))  # type: ignore[call-overload]
    merges = list(_field(reader, "tokenizer.ggml.merges"))  # type: ignore[call-overload]
    special = [i for i, t in enumerate(types) if t in (_CONTROL, _USER_DEFINED)]
    regular = {tok: i for i, tok in enumerate(tokens) if types[i] == _NORMAL}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": tokens[i],
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": types[i] == _CONTROL,
            }
            for i in special
        ],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": QWEN2_SPLIT},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": False,
                    "use_regex": False,
                },
            ],
        },
        "post_processor": None,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": False,
            "use_regex": False,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": regular,
            "merges": merges,
        },
    }


def main() -> None:
    gguf_path = Path(sys.argv[1])
    spec = build(gguf_path)
    text = json.dumps(spec, ensure_ascii=False)
    tokenizer = Tokenizer.from_str(text)
    sample = "Let me think. 12 × 3 = 36, so \\boxed{36}.<|im_end|>\n  indented 你好"
    ids = tokenizer.encode(sample).ids
    if tokenizer.decode(ids, skip_special_tokens=False) != sample:
        raise SystemExit("round trip failed")
    if tokenizer.token_to_id("<|im_end|>") != 151645 or 151645 not in ids:
        raise SystemExit("special tokens are not at Qwen2.5's ids")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    print(f"{OUT}: {OUT.stat().st_size} bytes, {tokenizer.get_vocab_size()} tokens; ids {ids}")


if __name__ == "__main__":
    main()
