"""Reference pool profiles shipped with the package, and the numbers they are computed from.

Four are roofline predictions (:mod:`policies.roofline`) for hardware this project cannot
measure: a 7B and a 32B Qwen2.5 model on an H100-class and an Ascend-910B-class device, each
as a ``plain`` pool and a ``draft`` pool (Qwen2.5-0.5B drafting k tokens). One is the CPU
profile the project measured. Every input below carries its source; the README next to the
shipped JSON (``policies/data/profiles/README.md``) lists them with the formulas. Regenerate
the files with ``tts-orchestrator reference-profiles write``.

`plan` uses these when no measured profile exists (and says so); a measured profile of the
real pools (``tts-orchestrator profile``) always replaces them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

from policies.profile import PoolProfile, ProfileSet, SpeculativeMethod, StepTimePoint
from policies.roofline import (
    Accelerator,
    Deployment,
    TransformerSpec,
    acceptance_from_tokens,
    roofline_profile,
)

DATA_PACKAGE = "policies.data.profiles"
DEFAULT_REFERENCE = "h100-7b"
#: The date the roofline inputs were last reviewed; stamped as the profiles' ``measured_at``.
REVIEWED_AT = datetime(2026, 12, 6, tzinfo=UTC)

# -- devices ------------------------------------------------------------------------------------

H100_SXM = Accelerator(
    name="H100 SXM5 80GB",
    memory_bandwidth=3.35e12,  # NVIDIA H100 datasheet: HBM3, 3.35 TB/s
    peak_flops=989.4e12,  # datasheet BF16 Tensor Core, dense (1,979 with 2:4 sparsity)
    memory_bytes=80e9,  # datasheet: 80 GB
    bandwidth_efficiency=0.8,  # assumed
    compute_efficiency=0.5,  # assumed
    step_overhead_s=1.5e-3,  # assumed: vLLM scheduling + sampling per step, CUDA graphs
    forward_overhead_s=0.3e-3,  # assumed: kernel launches of one captured forward
    allreduce_s=10e-6,  # assumed: one small all-reduce over NVLink (900 GB/s)
)

ASCEND_910B = Accelerator(
    name="Ascend 910B-class 64GB",
    # 4 HBM2e stacks x 1024 bits x 3.2 Gb/s / 8 = 1.64 TB/s (64 GB = 4 x 16 GB); public
    # figures for the part range from 0.4 to 1.6 TB/s and Huawei publishes no datasheet value.
    memory_bandwidth=4 * 1024 * 3.2e9 / 8,
    peak_flops=320e12,  # FP16 "about 320 TFLOPS" (public reports range 256-376)
    memory_bytes=64e9,
    bandwidth_efficiency=0.8,  # assumed, as H100
    compute_efficiency=0.5,  # assumed, as H100
    step_overhead_s=3.0e-3,  # assumed: 2x H100 (vllm-ascend graph mode is younger)
    forward_overhead_s=0.6e-3,  # assumed: 2x H100
    allreduce_s=20e-6,  # assumed: 2x NVLink's, over HCCS
)

# -- models (config.json of the Hugging Face checkpoints; parameter counts reproduce the
# published totals exactly: 7,615,616,512 / 32,763,876,352 / 494,032,768) ----------------------

QWEN25_7B = TransformerSpec(
    name="Qwen2.5-7B",
    hidden_size=3584,
    intermediate_size=18944,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    vocab_size=152064,
    tie_word_embeddings=False,
)
QWEN25_32B = TransformerSpec(
    name="Qwen2.5-32B",
    hidden_size=5120,
    intermediate_size=27648,
    num_layers=64,
    num_heads=40,
    num_kv_heads=8,
    vocab_size=152064,
    tie_word_embeddings=False,
)
QWEN25_05B = TransformerSpec(
    name="Qwen2.5-0.5B",
    hidden_size=896,
    intermediate_size=4864,
    num_layers=24,
    num_heads=14,
    num_kv_heads=2,
    vocab_size=151936,
    tie_word_embeddings=True,
)

# -- speculation --------------------------------------------------------------------------------

DRAFT_DEPTH = 4
#: Tokens per step the project measured on its CPU draft pool (Qwen2.5-Coder-1.5B verifying
#: Qwen2.5-Coder-0.5B, k = 4): 3.392 (docs/benchmarks.md, "Latency policy vs fixed N").
MEASURED_CPU_TOKENS_PER_STEP = 3.392
#: α = 0.805 solves tokens(α, 4) = 3.392; assumed to carry over to Qwen2.5-0.5B drafting for
#: the 7B / 32B (a larger gap between draft and target usually lowers it).
ALPHA = round(acceptance_from_tokens(MEASURED_CPU_TOKENS_PER_STEP, DRAFT_DEPTH), 3)


class RooflineReference(BaseModel):
    """One reference: a model on a device, priced by the roofline."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    served_model: str
    deployment: Deployment
    draft: TransformerSpec = QWEN25_05B
    depth: int = DRAFT_DEPTH
    alpha: float = Field(ALPHA, ge=0, le=1)

    def machine(self) -> str:
        d, a = self.deployment, self.deployment.accelerator
        return (
            f"REFERENCE (roofline, not measured): {d.tensor_parallel} x {a.name}, "
            f"{a.memory_bandwidth / 1e12:.2f} TB/s x {a.bandwidth_efficiency:g}, "
            f"{a.peak_flops / 1e12:.0f} TFLOPS x {a.compute_efficiency:g}, BF16, "
            f"context {d.context_tokens}, draft {self.draft.name} k={self.depth} "
            f"alpha={self.alpha:g}"
        )

    def profiles(self) -> ProfileSet:
        def pool(name: str, *, draft: TransformerSpec | None) -> PoolProfile:
            return roofline_profile(
                self.deployment,
                pool=name,
                engine="vllm",
                served_model=self.served_model,
                machine=self.machine(),
                measured_at=REVIEWED_AT,
                draft=draft,
                depth=self.depth if draft is not None else 0,
                alpha=self.alpha,
            )

        return ProfileSet.of([pool("plain", draft=None), pool("draft", draft=self.draft)])


def _deployment(model: TransformerSpec, device: Accelerator, tp: int) -> Deployment:
    # max_model_len / max_num_seqs as deploy/configs/gpu-vllm-speculative.yaml launches vLLM.
    return Deployment(
        model=model, accelerator=device, tensor_parallel=tp, max_model_len=16384, max_num_seqs=64
    )


#: The 32B in BF16 (65.5 GB) does not fit one 64 GB 910B and leaves one H100 (at u = 0.9) room
#: for a single 16k-token sequence, so both 32B references run tensor parallel on two devices.
ROOFLINE_REFERENCES: tuple[RooflineReference, ...] = (
    RooflineReference(
        name="h100-7b", served_model="qwen2.5-7b", deployment=_deployment(QWEN25_7B, H100_SXM, 1)
    ),
    RooflineReference(
        name="h100-32b",
        served_model="qwen2.5-32b",
        deployment=_deployment(QWEN25_32B, H100_SXM, 2),
    ),
    RooflineReference(
        name="910b-7b",
        served_model="qwen2.5-7b",
        deployment=_deployment(QWEN25_7B, ASCEND_910B, 1),
    ),
    RooflineReference(
        name="910b-32b",
        served_model="qwen2.5-32b",
        deployment=_deployment(QWEN25_32B, ASCEND_910B, 2),
    ),
)

# -- the measured CPU profile -------------------------------------------------------------------

CPU_MEASURED = "cpu-measured"
_CPU_MACHINE = (
    "MEASURED: x86_64, 2 cores, llama.cpp 2 threads, Q4_K_M "
    "(docs/benchmarks.md 'Latency policy vs fixed N', 2026-11-22 10:59 UTC)"
)
_CPU_AT = datetime(2026, 11, 22, 10, 59, tzinfo=UTC)


def measured_cpu_profiles() -> ProfileSet:
    """The profiles `benchmarks.policy_accuracy` measured in place on this project's 2-core box
    (deploy/configs/cpu-speculative.yaml), as printed in its docs section: step ms by
    concurrency, prefill tokens/s, tokens/step. The run's JSON was not kept; these are the
    printed values (0.1 ms, 3 decimals)."""

    def points(steps_ms: dict[int, float]) -> tuple[StepTimePoint, ...]:
        return tuple(
            StepTimePoint(concurrency=b, step_time_s=ms / 1e3) for b, ms in steps_ms.items()
        )

    common = {
        "engine": "llama_cpp",
        "model": "qwen2.5-coder-1.5b-instruct",
        "machine": _CPU_MACHINE,
        "measured_at": _CPU_AT,
        "max_concurrency": 4,
        "prefix_cache_shared": False,
    }
    plain = PoolProfile.model_validate(
        {
            **common,
            "pool": "plain",
            "step_times": points({1: 56.3, 2: 89.2, 4: 158.6}),
            "prefill_tokens_per_s": 69.0,
        }
    )
    draft = PoolProfile.model_validate(
        {
            **common,
            "pool": "draft",
            "speculative_method": SpeculativeMethod.DRAFT,
            "speculative_depth": DRAFT_DEPTH,
            "accepted_tokens_per_step": MEASURED_CPU_TOKENS_PER_STEP,
            "step_times": points({1: 458.7, 2: 937.2, 4: 1001.4}),
            "prefill_tokens_per_s": 37.0,
        }
    )
    return ProfileSet.of([plain, draft])


# -- the shipped files --------------------------------------------------------------------------


def build_reference_profiles() -> dict[str, ProfileSet]:
    """Every shipped profile set by name, computed (what `reference-profiles write` writes)."""
    built = {ref.name: ref.profiles() for ref in ROOFLINE_REFERENCES}
    built[CPU_MEASURED] = measured_cpu_profiles()
    return built


def reference_names() -> list[str]:
    """Names of the profile sets shipped as package data."""
    files = resources.files(DATA_PACKAGE)
    return sorted(p.name.removesuffix(".json") for p in files.iterdir() if p.name.endswith(".json"))


def load_reference(name: str) -> ProfileSet:
    """A shipped profile set; KeyError listing the shipped names on a miss."""
    path = resources.files(DATA_PACKAGE) / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no reference profile {name!r}; shipped: {', '.join(reference_names())}")
    return ProfileSet.from_json(path.read_text(encoding="utf-8"))
