"""API keys and per-key limits: hashing and storing keys, the gatekeeper, rate / concurrency /
token limits in Redis, log redaction and the `keys` command."""
