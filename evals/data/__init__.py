"""Packaged benchmark files (MATH-500, AIME 2024, AIME 2025); attribution in README.md here."""
