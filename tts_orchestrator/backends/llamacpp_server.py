"""Sidecar process running the native llama.cpp HTTP server (xllamacpp) for one worker.

Run as ``python -m tts_orchestrator.backends.llamacpp_server --model PATH --port N ...``.
The launcher starts it, waits for `/health`, and stops it with SIGTERM. The process also
dies with its parent (PR_SET_PDEATHSIG), so a killed launcher never leaves an engine behind.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent exits (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="GGUF path")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--parallel", type=int, default=4, help="slots (continuous batching)")
    ap.add_argument("--ctx", type=int, default=8192, help="total context, split across slots")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draft-model", default=None, help="GGUF of a draft model")
    ap.add_argument("--spec-type", choices=["none", "draft", "ngram"], default="none")
    ap.add_argument("--draft-max", type=int, default=0, help="speculative depth k")
    ap.add_argument("--alias", default=None, help="model name reported by the server")
    return ap.parse_args(argv)


def build_params(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    import xllamacpp as x  # heavy native import: only in the sidecar

    p = x.CommonParams()
    p.model.path = args.model
    p.hostnames = [args.host]
    p.port = args.port
    p.n_parallel = args.parallel
    p.n_ctx = args.ctx
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.endpoint_metrics = True
    p.endpoint_slots = True
    p.endpoint_props = True
    p.cont_batching = True
    p.cache_prompt = True
    p.warmup = True
    if args.alias:
        p.model_alias = {args.alias}  # a set of aliases
    spec = p.speculative
    if args.spec_type == "draft":
        if not args.draft_model:
            raise SystemExit("--spec-type draft needs --draft-model")
        spec.types = [x.common_speculative_type.COMMON_SPECULATIVE_TYPE_DRAFT_SIMPLE]
        spec.draft.mparams.path = args.draft_model
        spec.draft.cpuparams.n_threads = args.threads
        spec.draft.cpuparams_batch.n_threads = args.threads
        if args.draft_max:
            spec.draft.n_max = args.draft_max
    elif args.spec_type == "ngram":
        spec.types = [x.common_speculative_type.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
        if args.draft_max:
            spec.draft.n_max = args.draft_max
    return p


def main(argv: list[str] | None = None) -> None:
    die_with_parent()
    # Spin-waiting OpenMP threads starve everything else on a small shared box.
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    args = parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    import xllamacpp as x

    server = x.Server(build_params(args))
    print(f"llama.cpp server listening on {server.listening_address}", flush=True)
    stop.wait()
    os._exit(0)  # the native server threads do not join; exit without waiting for them


if __name__ == "__main__":
    main()
