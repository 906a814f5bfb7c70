"""The `tts` and `trim` sections: server defaults of the per-request test-time-scaling options."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tts_orchestrator.config._base import Section
from verifiers.confidence import ConfidenceConfig


class TrimConfig(Section):
    """TrimR trimming: the verifier service and the rule thresholds."""

    default: bool = Field(False, description="Trim requests that do not say `tts.trim`.")
    verifier_workers: int = Field(
        1, ge=0, description="Verifier Ray actors (0: no service; trimming never fires)."
    )
    batch: int = Field(64, ge=1, description="Checks a verifier takes per micro-batch.")
    rules: dict[str, Any] = Field(
        default_factory=dict, description="TrimRConfig overrides (overthink_m, ...)."
    )


class TtsDefaults(Section):
    """Server-side defaults for the per-request `tts` options."""

    n_branches: int = Field(1, ge=1, le=64)
    max_branches: int = Field(16, ge=1, le=256, description="Cap on `tts.n_branches`.")
    answer_budget: int = Field(
        512, ge=1, description="Tokens allowed for the answer after thinking is cut short."
    )
    equivalence_timeout_s: float = Field(
        3.0, gt=0, description="Per-comparison timeout of math-verify (in a worker process)."
    )
    confidence: ConfidenceConfig = Field(
        default_factory=ConfidenceConfig,
        description="DeepConf defaults of `aggregation: confidence` / `early_stop: confidence` "
        "(a request's `tts.confidence` overrides any of them).",
    )
