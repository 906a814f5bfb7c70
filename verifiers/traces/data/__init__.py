"""The packaged Qwen2.5 tokenizer (provenance and licence in README.md here)."""
