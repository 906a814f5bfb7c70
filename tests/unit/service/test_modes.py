from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from policies.auto import AutoPolicy
from policies.features import FEATURE_NAMES, extract_features
from policies.modes import ThinkingMode
from policies.router import RouterModel, RouterThresholds, RouteVerdict
from tts_orchestrator.config.modes import ModesConfig, ProbeCheck, UncertainAction
from tts_orchestrator.exceptions import ConfigError, RequestError
from tts_orchestrator.modes.resolution import (
    DecisionStage,
    ModeResolver,
    RunMode,
    load_router,
    splitter_family,
)
from verifiers.claims import check_claims
from verifiers.families import get_family
from verifiers.reasoning import split_reasoning

MATH500 = Path(__file__).resolve().parents[3] / "evals" / "data" / "math500.jsonl"
GENERIC, QWEN3, PANGU = get_family("generic"), get_family("qwen3"), get_family("openpangu")


def toy_router() -> RouterModel:
    """ "prove" pushes to slow, "what is" to fast; anything else scores exactly 0.5."""
    weights = {"kw_prove": 6.0, "kw_simple_ask": -6.0}
    return RouterModel(
        mean=(0.0,) * len(FEATURE_NAMES),
        scale=(1.0,) * len(FEATURE_NAMES),
        weights=tuple(weights.get(n, 0.0) for n in FEATURE_NAMES),
        bias=0.0,
        thresholds=RouterThresholds(fast_below=0.4, slow_at_or_above=0.6),
    )


def resolver(**config: Any) -> ModeResolver:
    return ModeResolver(ModesConfig(**config), router=toy_router())


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("inputs", "mode", "stage", "budget", "reason"),
    [
        ({"mode": ThinkingMode.FAST, "reasoning_effort": "high"}, "fast", "request", None,
         "tts.mode=fast requested"),
        ({"mode": ThinkingMode.SLOW, "template_kwargs": {"enable_thinking": False}}, "slow",
         "request", None, "tts.mode=slow requested"),
        ({"template_kwargs": {"enable_thinking": False}, "reasoning_effort": "high"}, "fast",
         "template_kwargs", None, "enable_thinking=false"),
        ({"reasoning_effort": "low"}, "fast", "effort", None, "reasoning_effort=low maps to fast"),
        ({"reasoning_effort": "medium"}, "slow", "effort", 2048, "2048-token thinking budget"),
        ({"reasoning_effort": "high"}, "slow", "effort", 8192, "reasoning_effort=high"),
        ({"reasoning_effort": "high", "thinking_budget": 300}, "slow", "effort", 300,
         "300-token"),
        ({"mode": ThinkingMode.SLOW, "thinking_budget": 300}, "slow", "request", 300,
         "requested"),
        ({"mode": ThinkingMode.FAST, "thinking_budget": 300}, "fast", "request", None,
         "requested"),
        ({}, "fast", "default", None, "family generic has no native thinking, so fast"),
    ],
    ids=[
        "mode-beats-effort",
        "mode-beats-template-flag",
        "template-flag-beats-effort",
        "effort-low",
        "effort-medium",
        "effort-high",
        "explicit-budget-beats-effort-budget",
        "slow-keeps-explicit-budget",
        "fast-has-no-budget",
        "generic-default-is-fast",
    ],
)  # fmt: skip
def test_decision_precedence_and_reason(
    inputs: dict[str, Any], mode: str, stage: str, budget: int | None, reason: str
) -> None:
    choice = resolver().decide(GENERIC, prompt_text="What is 2 + 2?", **inputs)
    assert (choice.mode.value, choice.stage.value, choice.thinking_budget) == (mode, stage, budget)
    assert reason in choice.reason


def test_defaults_follow_the_family_then_config() -> None:
    assert resolver().decide(QWEN3, prompt_text="hi").mode is RunMode.SLOW
    configured = resolver(default_mode=ThinkingMode.SLOW, slow_thinking_budget=512)
    choice = configured.decide(GENERIC, prompt_text="hi")
    assert (choice.mode, choice.thinking_budget) == (RunMode.SLOW, 512)
    assert "server default slow" in choice.reason
    assert choice.requested is None


def test_unknown_effort_is_a_request_error_naming_the_levels() -> None:
    with pytest.raises(RequestError, match="valid: none, minimal, low") as info:
        resolver().decide(GENERIC, prompt_text="hi", reasoning_effort="extreme")
    assert info.value.param == "reasoning_effort"


@pytest.mark.parametrize(
    ("prompt", "on_uncertain", "mode"),
    [
        ("Prove that the sum of two even numbers is even.", UncertainAction.PROBE, "slow"),
        ("What is 2 + 2?", UncertainAction.PROBE, "fast"),
        ("Hello there", UncertainAction.PROBE, "probe"),
        ("Hello there", UncertainAction.SLOW, "slow"),
        ("Hello there", UncertainAction.FAST, "fast"),
    ],
    ids=["slow", "fast", "uncertain-probes", "uncertain-slow", "uncertain-fast"],
)
def test_auto_asks_the_stage1_router(prompt: str, on_uncertain: UncertainAction, mode: str) -> None:
    r = resolver(on_uncertain=on_uncertain, slow_thinking_budget=700)
    choice = r.decide(GENERIC, prompt_text=prompt, mode=ThinkingMode.AUTO)
    assert choice.mode.value == mode
    assert choice.stage is DecisionStage.ROUTER
    assert choice.score is not None
    assert "stage 1: P(needs slow)=" in choice.reason
    assert choice.thinking_budget == (700 if mode in ("slow", "probe") else None)
    assert ("uncertain" in choice.reason) == (prompt == "Hello there")


def test_auto_uses_a_trained_auto_mode_unless_told_not_to() -> None:
    resolution = resolver().resolve(PANGU, messages=user("Hello there"), mode=ThinkingMode.AUTO)
    assert resolution.choice.mode is RunMode.AUTO
    assert resolution.choice.stage is DecisionStage.NATIVE_AUTO
    assert resolution.plan is not None
    assert resolution.plan.messages[-1]["content"] == "Hello there /auto_think"
    routed = resolver(prefer_native_auto=False).resolve(
        PANGU, messages=user("What is 2 + 2?"), mode=ThinkingMode.AUTO
    )
    assert routed.choice.mode is RunMode.FAST
    assert routed.plan is not None
    assert routed.plan.messages[-1]["content"] == "What is 2 + 2? /no_think"


def test_server_default_auto_says_so() -> None:
    choice = resolver(default_mode=ThinkingMode.AUTO).decide(GENERIC, prompt_text="What is 1?")
    assert choice.mode is RunMode.FAST
    assert choice.stage is DecisionStage.ROUTER
    assert choice.reason.startswith("no mode requested: server default auto; auto: stage 1")


def test_resolve_plans_the_decided_mode_and_records_the_switch() -> None:
    resolution = resolver().resolve(QWEN3, messages=user("hi"), reasoning_effort="low")
    assert resolution.plan is not None
    assert resolution.escalation is None
    assert resolution.plan.template_kwargs == {"enable_thinking": False}
    assert resolution.choice.switch == "qwen3: chat template enable_thinking=False"


@pytest.mark.parametrize(
    ("inputs", "config", "instructed"),
    [
        ({}, {}, False),  # nobody chose fast: the model's own behaviour, messages as sent
        ({"mode": ThinkingMode.FAST}, {}, True),
        ({"reasoning_effort": "low"}, {}, True),
        ({}, {"default_mode": ThinkingMode.FAST}, True),  # the operator chose it
    ],
    ids=["unchosen", "tts-mode", "effort-low", "server-default"],
)
def test_generic_fast_is_switched_only_when_chosen(
    inputs: dict[str, Any], config: dict[str, Any], instructed: bool
) -> None:
    resolution = resolver(**config).resolve(GENERIC, messages=user("What is 2 + 2?"), **inputs)
    assert resolution.choice.mode is RunMode.FAST
    assert resolution.plan is not None
    systems = [m for m in resolution.plan.messages if m["role"] == "system"]
    assert bool(systems) is instructed
    assert ("as sent" in (resolution.choice.switch or "")) is not instructed


def test_a_probe_plans_fast_samples_and_a_slow_escalation() -> None:
    resolution = resolver().resolve(GENERIC, messages=user("Hello there"), mode=ThinkingMode.AUTO)
    assert resolution.choice.mode is RunMode.PROBE
    assert resolution.plan is not None
    assert resolution.plan.mode is ThinkingMode.FAST
    assert resolution.escalation is not None
    assert resolution.escalation.grammar is not None


@pytest.mark.parametrize(
    ("answers", "mode", "says"),
    [
        (["4", "4", "4"], RunMode.FAST, "3/3 fast probes agree"),
        (["4", "5", "4"], RunMode.SLOW, "escalate to slow"),
        (["4", None, "4"], RunMode.SLOW, "1/3 probes gave no answer"),
    ],
    ids=["agree", "disagree", "unanswered"],
)
def test_after_probe_stays_fast_or_escalates(
    answers: list[str | None], mode: RunMode, says: str
) -> None:
    r = resolver(slow_thinking_budget=900)
    choice = r.decide(GENERIC, prompt_text="Hello there", mode=ThinkingMode.AUTO)
    after = r.after_probe(choice, answers)
    assert after.mode is mode
    assert after.stage is DecisionStage.PROBE
    assert after.reason.startswith(choice.reason)
    assert says in after.reason
    assert after.thinking_budget == (900 if mode is RunMode.SLOW else None)
    assert after.score == choice.score


def test_probe_agreement_threshold_comes_from_config() -> None:
    r = resolver(probe_min_agreement=0.6)
    choice = r.decide(GENERIC, prompt_text="Hello there", mode=ThinkingMode.AUTO)
    assert r.after_probe(choice, ["4", "5", "4"]).mode is RunMode.FAST


GSM = "Terry eats 2 yogurts a day. They are 4 for $5.00. How much does he spend over 30 days?"


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        (
            "He eats 2 × 30 = 60 yogurts.\nThat is 60 / 4 = 15 packs at $5.00 each.\n"
            "So he spends \\(\\boxed{75}\\) dollars.",
            RunMode.FAST,
        ),
        ("Therefore, Terry spends $75.00 on yogurt over 30 days.", RunMode.SLOW),
    ],
    ids=["settled", "ambiguous-last-line"],
)
def test_the_answer_signals_check_judges_the_first_probe(text: str, mode: RunMode) -> None:
    r = ModeResolver(ModesConfig(probe_check=ProbeCheck.ANSWER_SIGNALS, slow_thinking_budget=900))
    choice = r.decide(GENERIC, prompt_text=GSM, mode=ThinkingMode.AUTO)
    # one probe with no vote: agreement alone would escalate; the answer check decides
    after = r.after_probe(choice, [None], texts=[text], problem=GSM)
    assert after.mode is mode
    assert after.stage is DecisionStage.PROBE
    assert "stage 3 (level 0): P(answer wrong)=" in after.reason
    assert after.thinking_budget == (900 if mode is RunMode.SLOW else None)


def test_a_probe_its_own_text_refutes_escalates() -> None:
    r = ModeResolver(ModesConfig(probe_check=ProbeCheck.ANSWER_SIGNALS))
    assert r.checks_claims
    choice = r.decide(GENERIC, prompt_text=GSM, mode=ThinkingMode.AUTO)
    settled = "He eats 2 × 30 = 60 yogurts, 15 packs.\nSo he spends \\(\\boxed{75}\\) dollars."
    assert r.after_probe(choice, [None], texts=[settled], problem=GSM).mode is RunMode.FAST
    claims = check_claims("So \\(15 \\times 5 = 70\\) dollars.")
    after = r.after_probe(choice, [None], texts=[settled], problem=GSM, claims=claims)
    assert after.mode is RunMode.SLOW
    assert "claims_refuted → escalate" in after.reason
    assert "(refuted: 15 \\times 5 = 70)" in after.reason


def test_the_answer_check_needs_a_readable_policy(tmp_path: Path) -> None:
    assert ModeResolver().auto_policy is None  # the default check is agreement
    with pytest.raises(ConfigError, match="cannot load the auto policy"):
        ModeResolver(
            ModesConfig(
                probe_check=ProbeCheck.ANSWER_SIGNALS, auto_policy=str(tmp_path / "none.json")
            )
        )


def test_a_raw_prompt_is_decided_but_not_switched() -> None:
    resolution = resolver().resolve(QWEN3, messages=None, prompt_text="hi", mode=ThinkingMode.FAST)
    assert resolution.plan is None
    assert resolution.choice.mode is RunMode.FAST
    assert "raw prompt" in resolution.choice.reason


@pytest.mark.parametrize(
    ("family", "mode", "output", "reasoning", "content"),
    [
        ("deepseek_r1", ThinkingMode.FAST, "It is 4.", "", "It is 4."),
        (
            "deepseek_r1",
            ThinkingMode.SLOW,
            "2+2=4\n</think>\n\nIt is 4.",
            "2+2=4\n",
            "\n\nIt is 4.",
        ),
        ("generic", ThinkingMode.SLOW, "<think>\n2+2=4\n</think>\n\n4", "\n2+2=4\n", "\n\n4"),
        ("generic", ThinkingMode.FAST, "<think>x</think>4", "", "<think>x</think>4"),
        ("sky_t1", ThinkingMode.SLOW, "hmm<|end_of_thought|>4", "hmm", "4"),
    ],
    ids=["r1-fast", "r1-slow", "generic-slow", "generic-fast", "sky-slow-prefilled"],
)
def test_splitter_family_splits_where_the_output_starts(
    family: str, mode: ThinkingMode, output: str, reasoning: str, content: str
) -> None:
    plan = resolver().plan(get_family(family), RunMode(mode.value), user("hi"))
    assert split_reasoning(output, splitter_family(plan)) == (reasoning, content)


def test_check_family_rejects_unknown_families() -> None:
    resolver().check_family("qwen3")
    with pytest.raises(ConfigError, match=r"unknown model family 'qwen2\.5'"):
        resolver().check_family("qwen2.5")


def test_router_model_errors_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "router.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="cannot load the router model"):
        load_router(bad)
    with pytest.raises(ConfigError):
        ModeResolver(ModesConfig(router_model=str(tmp_path / "missing.json")))


def test_the_shipped_router_is_the_stage1_of_the_shipped_auto_policy() -> None:
    """router-default.json is auto-default.json's stage 1 (fitted on the GSM8K fast / slow
    pair), with everything below its slow cut left to stage 3 (probed)."""
    model = load_router(None)
    auto = AutoPolicy.model_validate_json(
        resources.files("policies.data").joinpath("auto-default.json").read_text("utf-8")
    )
    assert model.feature_names == FEATURE_NAMES
    assert model.trained_on == auto.trained_on == 388
    assert model.weights == auto.stage1.weights
    assert model.bias == auto.stage1.bias
    assert model.thresholds.fast_below == 0.0
    assert model.thresholds.slow_at_or_above == pytest.approx(auto.start_deepest_at)
    rows = [json.loads(line) for line in MATH500.read_text(encoding="utf-8").splitlines()]
    verdicts = {model.verdict(model.score(extract_features(r["problem"]))) for r in rows[:50]}
    assert verdicts <= {RouteVerdict.UNCERTAIN, RouteVerdict.SLOW}
    assert ModeResolver().router == model
