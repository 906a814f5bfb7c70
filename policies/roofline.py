"""Roofline latency of one decode step: what a pool profile would say on hardware we cannot measure.

A decode step of a dense transformer runs two kinds of kernels, each bounded by memory
bandwidth or by compute, whichever is slower (Williams et al., *Roofline*, CACM 2009). With
``B`` sequences, each adding ``q`` tokens (1 without speculation, ``k + 1`` when verifying
``k`` drafts), at a mean context of ``c`` tokens, on ``t`` devices in tensor parallel with
effective bandwidth ``BW = t · bandwidth · eta_bw`` and compute ``F = t · flops · eta_f``:

* linear layers read every weight once per forward, whatever ``B``::

      linear(B)    = max(W / BW,  B · q · 2·P / F)        W: weight bytes read, P: their params

  memory-bound (flat in ``B``) below the knee ``B* = W · F / (BW · 2·P · q)``, compute-bound
  (linear in ``B``) above it;
* attention reads each sequence's own KV cache, which batching cannot share::

      attention(B) = B · max(c · kv / BW,  q · 4·L·H·d·c / F)   kv: KV bytes per token

* plus ``2·L`` all-reduces of ``a`` seconds each when ``t > 1`` and a fixed ``o_fwd`` per
  forward (kernel launches), and ``o_step`` once per engine step (scheduling, sampling)::

      forward(B, q) = linear + attention + 2·L·a·[t > 1] + o_fwd
      step(B)       = o_step + forward_target(B, 1)

Speculative decoding with a draft model proposing ``k`` tokens (k draft forwards of one token),
verified in one target forward of ``k + 1`` tokens per sequence::

      step_spec(B)  = o_step + k · forward_draft(B, 1) + forward_target(B, k + 1)
      tokens(α, k)  = (1 - α^(k+1)) / (1 - α)            (Leviathan et al. 2023, i.i.d. α)
      speedup(B)    = tokens(α, k) · step(B) / step_spec(B)

Prefill is one forward of the whole prompt (``B = 1``, ``q = prompt tokens``). Slots: the KV
cache left after the weights, ``(t · memory · u - W_target - W_draft) / (kv_target + kv_draft)``
tokens, divided by the longest sequence a slot must hold, capped at the engine's
``max_num_seqs``.

Everything here is pure arithmetic on the datasheet and config numbers passed in; the numbers
themselves and their sources live in :mod:`policies.reference`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field

from policies.profile import PoolProfile, SpeculativeMethod, StepTimePoint


class Accelerator(BaseModel):
    """One device: datasheet peaks, the share of them decode kernels reach, fixed overheads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    memory_bandwidth: float = Field(..., gt=0, description="Peak memory bandwidth, bytes/s.")
    peak_flops: float = Field(..., gt=0, description="Dense BF16/FP16 matrix peak, FLOP/s.")
    memory_bytes: float = Field(..., gt=0, description="Device memory, bytes.")
    bandwidth_efficiency: float = Field(0.8, gt=0, le=1, description="eta_bw: share reached.")
    compute_efficiency: float = Field(0.5, gt=0, le=1, description="eta_f: share reached.")
    step_overhead_s: float = Field(..., ge=0, description="o_step: per engine step.")
    forward_overhead_s: float = Field(..., ge=0, description="o_fwd: per model forward.")
    allreduce_s: float = Field(0.0, ge=0, description="a: one all-reduce under tensor parallel.")


class TransformerSpec(BaseModel):
    """A dense decoder (Qwen2 / Llama layout: GQA attention with q/k/v biases, SwiGLU MLP)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    hidden_size: int = Field(..., ge=1)
    intermediate_size: int = Field(..., ge=1)
    num_layers: int = Field(..., ge=1)
    num_heads: int = Field(..., ge=1)
    num_kv_heads: int = Field(..., ge=1)
    vocab_size: int = Field(..., ge=1)
    tie_word_embeddings: bool
    qkv_bias: bool = True
    bytes_per_param: float = Field(2.0, gt=0, description="2: BF16 weights.")
    kv_bytes_per_value: float = Field(2.0, gt=0, description="2: BF16 KV cache.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @cached_property
    def layer_params(self) -> int:
        h, kv = self.hidden_size, self.num_kv_heads * self.head_dim
        attention = 2 * h * h + 2 * h * kv  # q, o; k, v
        bias = (h + 2 * kv) if self.qkv_bias else 0
        mlp = 3 * h * self.intermediate_size  # gate, up, down
        return attention + bias + mlp + 2 * h  # two RMSNorms

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def parameters(self) -> int:
        """Every parameter: layers, final norm, embedding, and the LM head when untied."""
        head = 0 if self.tie_word_embeddings else self.embedding_params
        return self.num_layers * self.layer_params + self.hidden_size + self.embedding_params + head

    @property
    def decode_params(self) -> int:
        """Parameters one forward multiplies by: all but the input embedding table, which is
        only indexed (with tied embeddings the same matrix is read whole as the LM head)."""
        return self.num_layers * self.layer_params + self.hidden_size + self.embedding_params

    @property
    def weight_bytes(self) -> float:
        """W: bytes of weights one forward reads."""
        return self.decode_params * self.bytes_per_param

    @property
    def stored_bytes(self) -> float:
        """Bytes the weights occupy in device memory."""
        return self.parameters * self.bytes_per_param

    @property
    def linear_flops_per_token(self) -> float:
        """2·P: a multiply and an add per parameter."""
        return 2.0 * self.decode_params

    def attention_flops_per_token(self, context: int) -> float:
        """4·L·H·d·c: Q·K^T and softmax·V over ``context`` positions."""
        return 4.0 * self.num_layers * self.num_heads * self.head_dim * context

    @property
    def kv_bytes_per_token(self) -> float:
        """kv: K and V of every layer for one position."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.kv_bytes_per_value


class Bound(StrEnum):
    MEMORY = "memory"
    COMPUTE = "compute"


class ForwardCost(BaseModel):
    """One forward's time and its parts, seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights_s: float = Field(..., description="W / BW.")
    linear_compute_s: float = Field(..., description="B·q·2P / F.")
    kv_s: float = Field(..., description="B·c·kv / BW.")
    attention_compute_s: float
    allreduce_s: float
    overhead_s: float
    total_s: float
    bound: Bound = Field(..., description="What bounds the linear layers.")


class Deployment(BaseModel):
    """A model served on ``tensor_parallel`` devices, and the workload shape it is priced at."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: TransformerSpec
    accelerator: Accelerator
    tensor_parallel: int = Field(1, ge=1)
    context_tokens: int = Field(2048, ge=1, description="c: mean context while decoding.")
    memory_utilization: float = Field(0.9, gt=0, le=1, description="u: share for the engine.")
    max_model_len: int = Field(16384, ge=1, description="Longest sequence a slot must hold.")
    max_num_seqs: int = Field(64, ge=1, description="The engine's own cap on sequences.")

    @property
    def bandwidth(self) -> float:
        a = self.accelerator
        return self.tensor_parallel * a.memory_bandwidth * a.bandwidth_efficiency

    @property
    def flops(self) -> float:
        a = self.accelerator
        return self.tensor_parallel * a.peak_flops * a.compute_efficiency

    def forward(
        self, *, sequences: int, tokens_per_sequence: int = 1, model: TransformerSpec | None = None
    ) -> ForwardCost:
        """One forward of ``model`` (default: the target) over ``sequences`` sequences."""
        if sequences < 1 or tokens_per_sequence < 1:
            raise ValueError("sequences and tokens_per_sequence must be >= 1")
        m = model or self.model
        tokens = sequences * tokens_per_sequence
        weights = m.weight_bytes / self.bandwidth
        linear = tokens * m.linear_flops_per_token / self.flops
        kv = sequences * self.context_tokens * m.kv_bytes_per_token / self.bandwidth
        attention = tokens * m.attention_flops_per_token(self.context_tokens) / self.flops
        allreduce = 2 * m.num_layers * self.accelerator.allreduce_s * (self.tensor_parallel > 1)
        overhead = self.accelerator.forward_overhead_s
        return ForwardCost(
            weights_s=weights,
            linear_compute_s=linear,
            kv_s=kv,
            attention_compute_s=attention,
            allreduce_s=allreduce,
            overhead_s=overhead,
            total_s=max(weights, linear) + max(kv, attention) + allreduce + overhead,
            bound=Bound.MEMORY if weights >= linear else Bound.COMPUTE,
        )

    def knee_batch(self, tokens_per_sequence: int = 1) -> float:
        """B*: the batch where the target's linear layers turn compute-bound."""
        m = self.model
        return (
            m.weight_bytes
            * self.flops
            / (self.bandwidth * m.linear_flops_per_token * tokens_per_sequence)
        )

    def step_time_s(self, batch: int) -> float:
        """step(B) = o_step + forward_target(B, 1)."""
        return self.accelerator.step_overhead_s + self.forward(sequences=batch).total_s

    def speculative_step_time_s(self, batch: int, *, draft: TransformerSpec, depth: int) -> float:
        """step_spec(B) = o_step + k · forward_draft(B, 1) + forward_target(B, k + 1)."""
        if depth < 1:
            raise ValueError("depth (k) must be >= 1")
        drafting = depth * self.forward(sequences=batch, model=draft).total_s
        verify = self.forward(sequences=batch, tokens_per_sequence=depth + 1).total_s
        return self.accelerator.step_overhead_s + drafting + verify

    def speculative_speedup(
        self, batch: int, *, draft: TransformerSpec, depth: int, alpha: float
    ) -> float:
        """speedup(B) = tokens(α, k) · step(B) / step_spec(B): per-sequence decode rate ratio."""
        spec = self.speculative_step_time_s(batch, draft=draft, depth=depth)
        return expected_tokens_per_step(alpha, depth) * self.step_time_s(batch) / spec

    def prefill_tokens_per_s(self, prompt_tokens: int) -> float:
        """A prompt of ``prompt_tokens`` in one forward (plus the step overhead)."""
        seconds = (
            self.accelerator.step_overhead_s
            + self.forward(sequences=1, tokens_per_sequence=prompt_tokens).total_s
        )
        return prompt_tokens / seconds

    def slots(self, *, draft: TransformerSpec | None = None) -> int:
        """Sequences of ``max_model_len`` the KV cache holds next to the weights, capped."""
        memory = self.tensor_parallel * self.accelerator.memory_bytes * self.memory_utilization
        weights = self.model.stored_bytes + (draft.stored_bytes if draft else 0.0)
        per_token = self.model.kv_bytes_per_token + (draft.kv_bytes_per_token if draft else 0.0)
        fits = int((memory - weights) // (per_token * self.max_model_len))
        if fits < 1:
            raise ValueError(
                f"{self.model.name} on {self.tensor_parallel} x {self.accelerator.name}: "
                f"weights {weights / 1e9:.1f} GB leave no room for one {self.max_model_len}-token "
                f"sequence in {memory / 1e9:.1f} GB"
            )
        return min(fits, self.max_num_seqs)


def expected_tokens_per_step(alpha: float, depth: int) -> float:
    """tokens(α, k) = (1 - α^(k+1)) / (1 - α): expected tokens per verify step when each draft
    token is accepted with probability α independently (k + 1 at α = 1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    if alpha == 1.0:
        return float(depth + 1)
    return (1.0 - alpha ** (depth + 1)) / (1.0 - alpha)


def acceptance_from_tokens(tokens_per_step: float, depth: int) -> float:
    """The α whose :func:`expected_tokens_per_step` is ``tokens_per_step`` (bisection)."""
    if not 1.0 <= tokens_per_step <= depth + 1:
        raise ValueError(f"tokens_per_step must be in [1, {depth + 1}], got {tokens_per_step}")
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if expected_tokens_per_step(mid, depth) < tokens_per_step:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def batch_levels(slots: int) -> tuple[int, ...]:
    """1, 2, 4, ... below ``slots``, then ``slots`` (the levels `profile` measures)."""
    levels, b = [], 1
    while b < slots:
        levels.append(b)
        b *= 2
    return (*levels, slots)


def roofline_profile(
    deployment: Deployment,
    *,
    pool: str,
    engine: str,
    served_model: str,
    machine: str,
    measured_at: datetime,
    prefill_prompt_tokens: int = 256,
    draft: TransformerSpec | None = None,
    depth: int = 0,
    alpha: float = 0.0,
) -> PoolProfile:
    """The :class:`PoolProfile` the roofline predicts, at the levels `profile` would measure.

    With ``draft`` the pool speculates with it (``depth`` tokens, acceptance ``alpha``) and its
    step times include drafting and verification, as the profile defines them.
    """
    slots = deployment.slots(draft=draft)
    levels = batch_levels(slots)
    if draft is None:
        times = [deployment.step_time_s(b) for b in levels]
        method, accepted = SpeculativeMethod.NONE, 1.0
    else:
        times = [deployment.speculative_step_time_s(b, draft=draft, depth=depth) for b in levels]
        method, accepted = SpeculativeMethod.DRAFT, expected_tokens_per_step(alpha, depth)
    return PoolProfile.model_validate(
        {
            "pool": pool,
            "engine": engine,
            "model": served_model,
            "machine": machine,
            "measured_at": measured_at,
            "speculative_method": method,
            "speculative_depth": depth if draft is not None else 0,
            "step_times": tuple(
                StepTimePoint(concurrency=b, step_time_s=round(t, 7))
                for b, t in zip(levels, times, strict=True)
            ),
            "prefill_tokens_per_s": round(
                deployment.prefill_tokens_per_s(prefill_prompt_tokens), 1
            ),
            "accepted_tokens_per_step": round(accepted, 4),
            "max_concurrency": slots,
            "prefix_cache_shared": True,
        }
    )
