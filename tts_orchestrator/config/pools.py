"""The `pools` section: each pool's engine, served model, workers and speculative setting."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, model_validator

from tts_orchestrator.config._base import Section

EngineKind = Literal["llama_cpp", "vllm", "openai", "replay"]


class ReplayTokenizer(StrEnum):
    """How the replay engine cuts text into the tokens it streams and counts."""

    PSEUDO = "pseudo"  # word pieces by a fixed regex (no model's vocabulary; fast, no data)
    QWEN25 = "qwen2.5"  # the packaged Qwen2.5 BPE: real token counts of Qwen2.5-family traces


class SpeculativeConfig(Section):
    """Speculative decoding a pool's workers are started with (an engine-wide setting)."""

    method: Literal["none", "draft", "ngram", "eagle", "eagle3", "mtp"] = "none"
    num_speculative_tokens: int = Field(0, ge=0, le=64, description="Depth k.")
    draft_model: str | None = Field(None, description="Catalog name or path of the draft model.")

    @model_validator(mode="after")
    def _consistent(self) -> SpeculativeConfig:
        if self.method == "none" and self.num_speculative_tokens:
            raise ValueError("num_speculative_tokens needs a speculative method")
        if self.method == "draft" and not self.draft_model:
            raise ValueError("method 'draft' needs draft_model")
        return self


class LaunchSpec(Section):
    """How to start a pool's worker processes (managed by Ray on nodes with the resources)."""

    replicas: int = Field(1, ge=1, description="Worker processes in this pool.")
    bind_host: str = Field(
        "127.0.0.1", description="Address workers listen on (a private address on a cluster)."
    )
    model_path: str = Field(..., description="Catalog model name (see `models list`) or a path.")
    n_parallel: int = Field(4, ge=1, description="Parallel slots (llama.cpp) / max sequences.")
    n_ctx: int = Field(8192, ge=256, description="Total context; llama.cpp splits it across slots.")
    threads: int = Field(2, ge=1, description="CPU threads for decoding.")
    num_cpus: float = Field(0.0, ge=0, description="Ray CPUs reserved per worker process.")
    num_gpus: float = Field(0.0, ge=0, description="Ray GPUs reserved per worker process.")
    python: str | None = Field(
        None, description="Interpreter for the worker (vLLM runs from its own venv)."
    )
    extra_args: list[str] = Field(default_factory=list, description="Extra engine CLI args.")
    startup_timeout_s: float = Field(180.0, gt=0)
    restart: bool = Field(True, description="Restart a worker process that exits.")


class ReplayConfig(Section):
    """The replay engine: streams recorded traces (tests and benchmarks, never the default)."""

    traces: list[str] = Field(default_factory=list, description="JSONL files of recorded traces.")
    tokens_per_s: float = Field(200.0, gt=0, description="Per-stream token rate.")
    max_parallel: int = Field(64, ge=1, description="Concurrent streams before queueing.")
    fallback_text: str | None = Field(
        None,
        description="Streamed for a prompt that holds none of the traces' problems, as a real "
        "engine would answer anything (unset: such a prompt is a worker error, 502).",
    )
    tokenizer: ReplayTokenizer = Field(
        ReplayTokenizer.PSEUDO,
        description="Tokens streamed and counted: `pseudo` pieces, or `qwen2.5` (usage then "
        "counts what Qwen2.5-family models spent, as `router evaluate` does offline).",
    )


class PoolConfig(Section):
    """One pool of workers of the same model and speculative setting."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    engine: EngineKind = "llama_cpp"
    model: str = Field(..., description="Model name served to clients (`/v1/models`).")
    model_family: str = Field("generic", description="Family in the thinking-marker table.")
    urls: list[str] = Field(default_factory=list, description="Already-running workers.")
    launch: LaunchSpec | None = Field(None, description="Managed workers to start instead.")
    replay: ReplayConfig | None = None
    speculative: SpeculativeConfig = Field(default_factory=SpeculativeConfig)
    logprobs: bool | None = Field(
        None,
        description="Whether the workers return per-token logprobs, which the confidence "
        "options need (None: llama.cpp and vLLM do; openai and replay do not).",
    )
    direct_stream: bool = Field(
        True,
        description="Stream tokens from the workers straight into the API process when it can "
        "reach them (the pool actor still places branches and counts load); off: through Ray.",
    )

    @property
    def returns_logprobs(self) -> bool:
        if self.logprobs is not None:
            return self.logprobs
        return self.engine in ("llama_cpp", "vllm")

    @model_validator(mode="after")
    def _one_source(self) -> PoolConfig:
        if self.engine == "replay":
            if self.replay is None:
                raise ValueError("engine 'replay' needs a `replay` section")
        elif bool(self.urls) == (self.launch is not None):
            raise ValueError("give exactly one of `urls` or `launch`")
        return self
