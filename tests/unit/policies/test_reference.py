"""The shipped reference profiles (policies.reference, policies/data/profiles)."""

from __future__ import annotations

import pytest

from policies.reference import (
    CPU_MEASURED,
    DEFAULT_REFERENCE,
    MEASURED_CPU_TOKENS_PER_STEP,
    ROOFLINE_REFERENCES,
    build_reference_profiles,
    load_reference,
    reference_names,
)
from policies.roofline import expected_tokens_per_step

GPU = [ref.name for ref in ROOFLINE_REFERENCES]


def test_the_shipped_names() -> None:
    assert reference_names() == sorted([*GPU, CPU_MEASURED])
    assert {"h100-7b", "h100-32b", "910b-7b", "910b-32b"} == set(GPU)
    assert DEFAULT_REFERENCE in GPU


@pytest.mark.parametrize("name", [*GPU, CPU_MEASURED])
def test_shipped_file_is_what_the_generator_computes(name: str) -> None:
    assert load_reference(name) == build_reference_profiles()[name]


def test_unknown_name_lists_the_shipped_ones() -> None:
    with pytest.raises(KeyError, match="h100-7b"):
        load_reference("a100-7b")


@pytest.mark.parametrize("name", GPU)
def test_roofline_profiles_say_they_are_not_measured_and_speculation_pays(name: str) -> None:
    profiles = load_reference(name)
    plain, draft = profiles.get("plain"), profiles.get("draft")
    assert all("REFERENCE" in p.machine and "not measured" in p.machine for p in profiles.profiles)
    assert draft.speedup_over(plain, 1) > 1.5  # memory-bound: verifying k + 1 costs about 1
    assert plain.step_time_s(8) < 1.1 * plain.step_time_s(1)  # extra branches nearly free


def test_measured_cpu_profile_is_labelled_and_speculation_does_not_pay() -> None:
    profiles = load_reference(CPU_MEASURED)
    plain, draft = profiles.get("plain"), profiles.get("draft")
    assert all(p.machine.startswith("MEASURED") for p in profiles.profiles)
    assert draft.accepted_tokens_per_step == MEASURED_CPU_TOKENS_PER_STEP
    assert draft.speedup_over(plain, 1) < 1.0
    assert plain.step_time_s(4) > 2 * plain.step_time_s(1)  # compute-bound: branches cost


def test_gpu_acceptance_is_the_measured_cpu_tokens_per_step() -> None:
    for ref in ROOFLINE_REFERENCES:
        tokens = expected_tokens_per_step(ref.alpha, ref.depth)
        assert tokens == pytest.approx(MEASURED_CPU_TOKENS_PER_STEP, abs=0.01)


def test_why_the_32b_runs_tensor_parallel() -> None:
    """As the README says: one 910B cannot hold it, one H100 holds a single 16k sequence."""
    from policies.reference import ASCEND_910B, H100_SXM, QWEN25_32B
    from policies.roofline import Deployment

    with pytest.raises(ValueError, match="no room"):
        Deployment(model=QWEN25_32B, accelerator=ASCEND_910B, max_model_len=16384).slots()
    assert Deployment(model=QWEN25_32B, accelerator=H100_SXM, max_model_len=16384).slots() == 1
