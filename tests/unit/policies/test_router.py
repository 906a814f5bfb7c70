from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from policies.features import FEATURE_NAMES
from policies.modes import ThinkingMode
from policies.router import (
    RouterExample,
    RouterModel,
    RouterThresholds,
    RouteVerdict,
    fit_logistic,
    fit_router,
    probe_decision,
    resolve_mode,
    tradeoff_report,
)

MATH500 = Path(__file__).resolve().parents[3] / "evals" / "data" / "math500.jsonl"


def _math500() -> list[dict[str, object]]:
    if not MATH500.exists():
        pytest.skip(f"{MATH500} not available")
    return [json.loads(line) for line in MATH500.read_text(encoding="utf-8").splitlines()]


def _level_proxy_examples(rows: list[dict[str, object]]) -> list[RouterExample]:
    """Proxy labels from MATH difficulty: fast mode solves levels 1-2, slow solves all, and
    slow thinking spends more tokens on harder levels."""
    return [
        RouterExample(
            prompt=str(r["problem"]),
            solved_fast=int(r["level"]) <= 2,  # type: ignore[call-overload]
            solved_slow=True,
            tokens_fast=300,
            tokens_slow=300 + 400 * int(r["level"]),  # type: ignore[call-overload]
        )
        for r in rows
    ]


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    wins = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(wins + ties / 2)


@pytest.fixture(scope="module")
def math500_router() -> tuple[RouterModel, list[dict[str, object]]]:
    rows = _math500()
    return fit_router(_level_proxy_examples(rows[::2])), rows[1::2]


def test_fitted_router_ranks_level_5_above_level_1_on_held_out_problems(
    math500_router: tuple[RouterModel, list[dict[str, object]]],
) -> None:
    model, held_out = math500_router
    levels = np.array([int(r["level"]) for r in held_out])  # type: ignore[call-overload]
    scores = model.scores([str(r["problem"]) for r in held_out])
    level_means = {lv: float(scores[levels == lv].mean()) for lv in range(1, 6)}
    assert level_means[5] > level_means[1] + 0.1
    assert _auc(scores[levels == 5], scores[levels == 1]) > 0.7
    assert _auc(scores[levels >= 3], scores[levels <= 2]) > 0.6


def test_fitted_thresholds_keep_accuracy_and_save_tokens(
    math500_router: tuple[RouterModel, list[dict[str, object]]],
) -> None:
    model, _ = math500_router
    train_report = tradeoff_report(model, _level_proxy_examples(_math500()[::2]))
    t = model.thresholds.slow_at_or_above
    at_threshold = min(
        (p for p in train_report.curve if p.threshold >= t), key=lambda p: p.threshold
    )
    assert at_threshold.accuracy >= train_report.slow_accuracy - 0.02
    assert at_threshold.mean_tokens < train_report.slow_mean_tokens
    assert model.thresholds.fast_below == pytest.approx(max(0.0, t - 0.1))
    assert model.trained_on == len(_math500()[::2])


def test_tradeoff_report_spans_all_slow_to_all_fast() -> None:
    examples = [
        RouterExample(prompt=p, solved_fast=f, solved_slow=s, tokens_fast=100, tokens_slow=1000)
        for p, f, s in [
            ("What is 1+1?", True, True),
            ("Prove that $\\sum_k \\binom{n}{k} = 2^n$.", False, True),
            ("How many primes are below 100?", False, False),
        ]
    ]
    model = fit_router(examples)
    report = tradeoff_report(model, examples)
    first, last = report.curve[0], report.curve[-1]
    assert (first.slow_fraction, first.accuracy, first.mean_tokens) == (1.0, 2 / 3, 1000)
    assert (last.slow_fraction, last.accuracy, last.mean_tokens) == (0.0, 1 / 3, 100)
    assert report.fast_accuracy == pytest.approx(1 / 3)
    assert report.slow_accuracy == pytest.approx(2 / 3)
    fractions = [p.slow_fraction for p in report.curve]
    assert fractions == sorted(fractions, reverse=True)


def test_logistic_fit_recovers_known_weights() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6000, 2))
    y = (rng.random(6000) < 1 / (1 + np.exp(-(x @ np.array([2.0, -1.0]) + 0.5)))).astype(float)
    weights, bias = fit_logistic(x, y, l2=1e-3)
    np.testing.assert_allclose(weights, [2.0, -1.0], atol=0.15)
    assert bias == pytest.approx(0.5, abs=0.1)
    shrunk, _ = fit_logistic(x, y, l2=1000.0)
    assert np.linalg.norm(shrunk) < 0.5 * np.linalg.norm(weights)


def test_logistic_fit_stays_finite_on_separable_labels() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    weights, bias = fit_logistic(x, np.array([0.0, 0.0, 1.0, 1.0]), l2=0.1)
    assert np.all(np.isfinite(weights))
    assert np.isfinite(bias)


def _constant_router(logit: float, thresholds: RouterThresholds) -> RouterModel:
    d = len(FEATURE_NAMES)
    return RouterModel(
        mean=(0.0,) * d, scale=(1.0,) * d, weights=(0.0,) * d, bias=logit, thresholds=thresholds
    )


@pytest.mark.parametrize(
    ("logit", "verdict"),
    [
        pytest.param(-3.0, RouteVerdict.FAST, id="low-score-fast"),
        pytest.param(0.0, RouteVerdict.UNCERTAIN, id="middle-uncertain"),
        pytest.param(np.log(0.7 / 0.3), RouteVerdict.SLOW, id="at-slow-threshold-slow"),
        pytest.param(3.0, RouteVerdict.SLOW, id="high-score-slow"),
    ],
)
def test_thresholds_map_scores_to_verdicts(logit: float, verdict: RouteVerdict) -> None:
    router = _constant_router(logit, RouterThresholds(fast_below=0.3, slow_at_or_above=0.7))
    decision = router.decide("anything")
    assert decision.mode is verdict
    assert decision.score == pytest.approx(1 / (1 + np.exp(-logit)))
    assert f"→ {verdict.value}" in decision.reason


def test_reason_names_the_strongest_features() -> None:
    d = len(FEATURE_NAMES)
    weights = [0.0] * d
    weights[FEATURE_NAMES.index("kw_prove")] = 3.0
    router = RouterModel(mean=(0.0,) * d, scale=(1.0,) * d, weights=tuple(weights), bias=-1.0)
    decision = router.decide("Prove it.", top_k=1)
    assert decision.mode is RouteVerdict.SLOW
    assert "top contributions: kw_prove +3.00" in decision.reason
    assert decision.features["kw_prove"] == 1.0


def test_router_round_trips_through_json_files(
    tmp_path: Path, math500_router: tuple[RouterModel, list[dict[str, object]]]
) -> None:
    model, held_out = math500_router
    path = tmp_path / "router.json"
    model.save(path)
    loaded = RouterModel.load(path)
    assert loaded == model
    prompts = [str(r["problem"]) for r in held_out[:20]]
    np.testing.assert_array_equal(loaded.scores(prompts), model.scores(prompts))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"weights": (1.0,)}, id="wrong-length"),
        pytest.param({"scale": (0.0,) * len(FEATURE_NAMES)}, id="zero-scale"),
    ],
)
def test_router_model_validates_shapes(kwargs: dict[str, object]) -> None:
    d = len(FEATURE_NAMES)
    fields: dict[str, object] = {"mean": (0.0,) * d, "scale": (1.0,) * d, "weights": (0.0,) * d}
    fields.update(kwargs)
    with pytest.raises(ValidationError):
        RouterModel(bias=0.0, **fields)  # type: ignore[arg-type]


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValidationError):
        RouterThresholds(fast_below=0.8, slow_at_or_above=0.2)


def _same_number(a: str, b: str) -> bool:
    return Fraction(a) == Fraction(b)


@pytest.mark.parametrize(
    ("answers", "kwargs", "escalate", "agreement"),
    [
        pytest.param(["4", "4", "4"], {}, False, 1.0, id="unanimous-stays-fast"),
        pytest.param(["4", "4", "5"], {}, True, 2 / 3, id="disagreement-escalates"),
        pytest.param(["4", "4", "5"], {"min_agreement": 0.6}, False, 2 / 3, id="majority-enough"),
        pytest.param(["4", None, "4"], {}, True, 2 / 3, id="missing-answer-escalates"),
        pytest.param(
            ["0.5", "1/2", "2/4"], {"equivalent": _same_number}, False, 1.0, id="equivalent"
        ),
        pytest.param(["0.5", "1/2"], {}, True, 0.5, id="exact-keys-without-checker"),
        pytest.param(
            ["4", "4"],
            {"confidences": [0.9, 0.2], "min_confidence": 0.7},
            True,
            1.0,
            id="low-confidence-escalates",
        ),
        pytest.param([], {}, True, 0.0, id="no-probes"),
    ],
)
def test_probe_and_escalate(
    answers: list[str | None], kwargs: dict[str, object], escalate: bool, agreement: float
) -> None:
    decision = probe_decision(answers, **kwargs)  # type: ignore[arg-type]
    assert decision.escalate is escalate
    assert decision.agreement == pytest.approx(agreement)
    assert decision.reason.startswith("stage 3: " + ("escalate" if escalate else ""))


def test_probe_groups_are_largest_first() -> None:
    decision = probe_decision(["7", "3", "3", None, "7", "3"])
    assert decision.groups == ((1, 2, 5), (0, 4))
    assert decision.majority_answer == "3"
    with pytest.raises(ValueError, match="one confidence per answer"):
        probe_decision(["1"], confidences=[0.5, 0.5])


@pytest.mark.parametrize(
    ("kwargs", "mode", "budget"),
    [
        pytest.param({"mode": ThinkingMode.FAST}, RouteVerdict.FAST, None, id="explicit-fast"),
        pytest.param(
            {"mode": ThinkingMode.SLOW, "effort": "low", "thinking_budget": 900},
            RouteVerdict.SLOW,
            900,
            id="explicit-mode-beats-effort",
        ),
        pytest.param({"effort": "low"}, RouteVerdict.FAST, 0, id="effort-low"),
        pytest.param({"effort": "minimal"}, RouteVerdict.FAST, 0, id="effort-minimal"),
        pytest.param({"effort": "medium"}, RouteVerdict.SLOW, 2048, id="effort-medium"),
        pytest.param({"effort": "high"}, RouteVerdict.SLOW, 8192, id="effort-high"),
        pytest.param(
            {"effort": "medium", "thinking_budget": 1000},
            RouteVerdict.SLOW,
            1000,
            id="explicit-budget-beats-effort-budget",
        ),
        pytest.param({}, RouteVerdict.SLOW, None, id="server-default"),
        pytest.param(
            {"default": ThinkingMode.FAST}, RouteVerdict.FAST, None, id="server-default-fast"
        ),
        pytest.param({"mode": ThinkingMode.AUTO}, RouteVerdict.SLOW, None, id="auto-no-router"),
    ],
)
def test_resolve_mode(kwargs: dict[str, object], mode: RouteVerdict, budget: int | None) -> None:
    decision = resolve_mode("What is 2+2?", **kwargs)  # type: ignore[arg-type]
    assert decision.mode is mode
    assert decision.thinking_budget == budget
    assert decision.reason


@pytest.mark.parametrize(
    ("logit", "verdict"),
    [
        pytest.param(-5.0, RouteVerdict.FAST, id="router-says-fast"),
        pytest.param(5.0, RouteVerdict.SLOW, id="router-says-slow"),
    ],
)
def test_auto_mode_asks_the_router(logit: float, verdict: RouteVerdict) -> None:
    router = _constant_router(logit, RouterThresholds())
    decision = resolve_mode(
        "What is 2+2?", mode=ThinkingMode.AUTO, router=router, thinking_budget=512
    )
    assert decision.mode is verdict
    assert decision.thinking_budget == 512
    assert decision.reason.startswith("stage 1:")
    assert decision.score is not None


def test_resolve_mode_rejects_unknown_effort() -> None:
    with pytest.raises(ValueError, match="valid: none, minimal, low, medium, high"):
        resolve_mode("x", effort="extreme")
