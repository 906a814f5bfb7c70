"""Fitted models shipped with the policies (provenance in README.md here)."""
