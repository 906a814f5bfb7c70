"""Reference pool profiles (sources and formulas in README.md here)."""
