"""The roofline: step time vs batch, the knee, speculation, slots (policies.roofline)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from policies.reference import (
    ASCEND_910B,
    H100_SXM,
    QWEN25_05B,
    QWEN25_7B,
    QWEN25_32B,
    ROOFLINE_REFERENCES,
)
from policies.roofline import (
    Accelerator,
    Bound,
    Deployment,
    TransformerSpec,
    acceptance_from_tokens,
    batch_levels,
    expected_tokens_per_step,
    roofline_profile,
)

DEPLOYMENTS = [pytest.param(ref.deployment, id=ref.name) for ref in ROOFLINE_REFERENCES]
# No overheads, no all-reduce: only the two roofline terms remain, so formulas can be checked
# by hand.
BARE = Accelerator(
    name="bare",
    memory_bandwidth=1e12,
    peak_flops=100e12,
    memory_bytes=80e9,
    bandwidth_efficiency=1.0,
    compute_efficiency=1.0,
    step_overhead_s=0.0,
    forward_overhead_s=0.0,
)


@pytest.mark.parametrize(
    ("model", "published"),
    [
        pytest.param(QWEN25_7B, 7_615_616_512, id="qwen2.5-7b"),
        pytest.param(QWEN25_32B, 32_763_876_352, id="qwen2.5-32b"),
        pytest.param(QWEN25_05B, 494_032_768, id="qwen2.5-0.5b-tied"),
    ],
)
def test_parameter_count_reproduces_the_published_total(
    model: TransformerSpec, published: int
) -> None:
    assert model.parameters == published


def test_tied_embeddings_are_read_once_and_untied_skip_the_input_table() -> None:
    assert QWEN25_05B.decode_params == QWEN25_05B.parameters
    assert QWEN25_7B.decode_params == QWEN25_7B.parameters - QWEN25_7B.embedding_params


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_step_time_never_decreases_with_batch_and_throughput_grows(
    deployment: Deployment,
) -> None:
    batches = list(range(1, 513))
    steps = [deployment.step_time_s(b) for b in batches]
    assert all(later >= earlier for earlier, later in itertools.pairwise(steps))
    assert steps[-1] > steps[0]
    throughput = [b / s for b, s in zip(batches, steps, strict=True)]
    assert all(later > earlier for earlier, later in itertools.pairwise(throughput))


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_memory_bound_below_the_knee_compute_bound_above(deployment: Deployment) -> None:
    knee = deployment.knee_batch()
    below, above = int(knee * 0.9), int(knee * 1.1) + 1
    low = deployment.forward(sequences=below)
    assert low.bound is Bound.MEMORY
    assert low.linear_compute_s < low.weights_s
    high = deployment.forward(sequences=above)
    assert high.bound is Bound.COMPUTE
    assert high.linear_compute_s > high.weights_s
    # Below the knee only the per-sequence KV reads grow with the batch.
    kv_per_sequence = deployment.forward(sequences=1).kv_s
    grown = deployment.step_time_s(below) - deployment.step_time_s(1)
    assert grown == pytest.approx((below - 1) * kv_per_sequence, rel=1e-9)
    # Past it each further sequence adds its own compute as well: 2P / F per token.
    per_token = deployment.model.linear_flops_per_token / deployment.flops
    added = deployment.step_time_s(above + 1) - deployment.step_time_s(above)
    assert added == pytest.approx(per_token + kv_per_sequence, rel=1e-6)


def test_knee_is_the_ridge_point_in_sequences() -> None:
    bare = Deployment(model=QWEN25_7B, accelerator=BARE)
    # W / BW = B* · 2P / F  with W = 2 bytes · P  =>  B* = F / BW (one token per sequence)
    assert bare.knee_batch() == pytest.approx(100e12 / 1e12)
    assert bare.knee_batch(5) == pytest.approx(100e12 / 1e12 / 5)
    h100 = Deployment(model=QWEN25_7B, accelerator=H100_SXM)
    ridge = (989.4e12 * 0.5) / (3.35e12 * 0.8)
    assert h100.knee_batch() == pytest.approx(ridge)
    # Tensor parallel multiplies bandwidth and compute alike: the knee does not move.
    tp2 = Deployment(model=QWEN25_7B, accelerator=H100_SXM, tensor_parallel=2)
    assert tp2.knee_batch() == pytest.approx(ridge)


def test_forward_is_the_sum_of_the_two_rooflines() -> None:
    bare = Deployment(model=QWEN25_7B, accelerator=BARE, context_tokens=1000)
    cost = bare.forward(sequences=3, tokens_per_sequence=2)
    m = QWEN25_7B
    weights = m.weight_bytes / 1e12
    linear = 6 * 2 * m.decode_params / 100e12
    kv = 3 * 1000 * m.kv_bytes_per_token / 1e12
    attention = 6 * 4 * m.num_layers * m.num_heads * m.head_dim * 1000 / 100e12
    assert cost.total_s == pytest.approx(max(weights, linear) + max(kv, attention))
    assert m.kv_bytes_per_token == 2 * 28 * 4 * 128 * 2


@pytest.mark.parametrize(
    ("alpha", "depth", "tokens"),
    [
        pytest.param(0.0, 4, 1.0, id="nothing-accepted"),
        pytest.param(1.0, 4, 5.0, id="everything-accepted"),
        pytest.param(0.5, 1, 1.5, id="one-draft-half"),
        pytest.param(0.8, 4, 1 + 0.8 + 0.64 + 0.512 + 0.4096, id="geometric-sum"),
        pytest.param(0.7, 0, 1.0, id="no-drafts"),
    ],
)
def test_expected_tokens_per_step(alpha: float, depth: int, tokens: float) -> None:
    assert expected_tokens_per_step(alpha, depth) == pytest.approx(tokens)


@pytest.mark.parametrize("tokens", [1.0, 1.7, 3.392, 5.0])
def test_acceptance_inverts_the_tokens_formula(tokens: float) -> None:
    alpha = acceptance_from_tokens(tokens, 4)
    assert expected_tokens_per_step(alpha, 4) == pytest.approx(tokens, abs=1e-9)


def test_bad_acceptance_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        expected_tokens_per_step(1.2, 4)
    with pytest.raises(ValueError, match="tokens_per_step"):
        acceptance_from_tokens(6.0, 4)


def test_speculative_step_and_speedup_formula() -> None:
    bare = Deployment(model=QWEN25_7B, accelerator=BARE)
    batch, depth, alpha = 4, 4, 0.8
    draft = bare.forward(sequences=batch, model=QWEN25_05B).total_s
    verify = bare.forward(sequences=batch, tokens_per_sequence=depth + 1).total_s
    spec = bare.speculative_step_time_s(batch, draft=QWEN25_05B, depth=depth)
    assert spec == pytest.approx(depth * draft + verify)
    plain = bare.step_time_s(batch)
    speedup = bare.speculative_speedup(batch, draft=QWEN25_05B, depth=depth, alpha=alpha)
    assert speedup == pytest.approx(expected_tokens_per_step(alpha, depth) * plain / spec)
    # Below the verify knee, verifying k + 1 tokens costs what one does (up to attention
    # compute, memory-bound here), so the speedup is tokens(α, k) less the draft's share.
    assert verify == pytest.approx(plain, rel=1e-3)
    free_draft_speedup = expected_tokens_per_step(alpha, depth) * plain / verify
    assert speedup < free_draft_speedup
    assert speedup == pytest.approx(free_draft_speedup * verify / (verify + depth * draft))


@pytest.mark.parametrize("deployment", DEPLOYMENTS)
def test_speculation_pays_less_as_the_batch_grows_compute_bound(deployment: Deployment) -> None:
    small = deployment.speculative_speedup(1, draft=QWEN25_05B, depth=4, alpha=0.8)
    large = deployment.speculative_speedup(512, draft=QWEN25_05B, depth=4, alpha=0.8)
    assert small > 1.0
    assert large < small


def test_slots_from_the_memory_left_after_the_weights() -> None:
    d = Deployment(model=QWEN25_7B, accelerator=H100_SXM, max_model_len=16384, max_num_seqs=1000)
    free = 80e9 * 0.9 - QWEN25_7B.stored_bytes
    assert d.slots() == int(free // (QWEN25_7B.kv_bytes_per_token * 16384))
    assert d.model_copy(update={"max_num_seqs": 8}).slots() == 8
    with pytest.raises(ValueError, match="no room"):
        Deployment(model=QWEN25_32B, accelerator=ASCEND_910B).slots()


def test_profile_is_the_roofline_at_the_levels_profile_measures() -> None:
    d = Deployment(model=QWEN25_7B, accelerator=H100_SXM, max_num_seqs=24)
    profile = roofline_profile(
        d,
        pool="draft",
        engine="vllm",
        served_model="qwen2.5-7b",
        machine="test",
        measured_at=datetime(2026, 1, 1, tzinfo=UTC),
        draft=QWEN25_05B,
        depth=4,
        alpha=0.8,
    )
    assert [p.concurrency for p in profile.step_times] == [1, 2, 4, 8, 16, 24]
    assert batch_levels(24) == (1, 2, 4, 8, 16, 24)
    for point in profile.step_times:
        expected = d.speculative_step_time_s(point.concurrency, draft=QWEN25_05B, depth=4)
        assert point.step_time_s == pytest.approx(expected, rel=1e-5)
    assert profile.accepted_tokens_per_step == pytest.approx(expected_tokens_per_step(0.8, 4))
    assert profile.max_concurrency == 24
