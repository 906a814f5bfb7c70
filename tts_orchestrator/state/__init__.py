"""Shared state: the state-store contract, Redis and in-memory stores, the key schema and TTLs,
request records, and the embedded redis-server."""
