"""Thinking modes: resolving fast / slow / auto for a request, the probes, and the router CLI."""
