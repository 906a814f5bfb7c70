"""API keys, per-key limits and log redaction (see docs in each module)."""
