"""The answer's own claims, checked from its text: false steps and wrong stated roots."""

from __future__ import annotations

import pytest

from verifiers.claims import check_claims

# The fast answer of MATH-500 test/intermediate_algebra/2015 (Qwen2.5-32B-Instruct), its end.
WRONG_ROOTS = (
    "Thus, \\(s_1, s_2, s_3\\) are the roots of the polynomial \\(t^3 - 4t - 4\\). The roots of "
    "this polynomial are the solutions to \\(t^3 - 4t - 4 = 0\\), which are "
    "\\(t = 2, -1 - i, -1 + i\\).\n\nTherefore, the unordered set is "
    "\\[\\boxed{\\{2, -1-i, -1+i\\}}.\\]"
)


@pytest.mark.parametrize(
    ("text", "first_refuted"),
    [
        ("So \\(a_1 = \\frac{2016}{128} = 15\\).", "\\frac{2016}{128} = 15"),
        ("So \\(a_1 = \\frac{2016}{128} = 15.75\\).", None),
        ("Then \\[5(56) - 2(24) = 280 - 48 = 232\\]", None),
        ("Then \\[5(56) - 2(24) = 280 - 48 = 242\\]", "280 - 48 = 242"),
        ("That is $\\frac{1}{3} = 0.33$ of it.", None),
        (WRONG_ROOTS, "t = 2 does not solve t^{3} - 4 t - 4 = 0"),
        ("The roots of \\(t^2 - 3t + 2 = 0\\) are \\(t = 1, 2\\).", None),
        ("It is \\(z = -1 + i\\), a root of \\(z^2 + 2z + 2 = 0\\).", None),
        ("From \\(z^2 + 2z + 2 = 0\\) we get \\(z = -1 + i, -1 - i\\).", None),
        ("From \\(z^2 + 2z + 2 = 0\\) we get \\(z = 1 + i\\).", "z = 1 + i does not solve"),
        ("The ring: $900 = 0.30 × 900 = **$270** in all.", None),
        ("\\(30\\% \\text{ of } 900 = 270\\)", None),
        ("\\(\\arccos(\\frac{\\sqrt{3}}{2}) = 30^\\circ\\)", None),
        ("\\(3 \\cdot 29 + e = 124\\)", None),
        ("\\(17 \\div 5 = 3\\) remainder 2", None),
        ("\\(x \\approx 3.14 = 2\\)", None),
        ("No math at all: 2 + 2 = 5.", None),
    ],
    ids=[
        "false-division",
        "true-division",
        "true-products",
        "false-difference",
        "rounded-decimal",
        "stated-roots-fail",
        "stated-roots-hold",
        "root-before-equation-is-not-read",
        "complex-roots-hold",
        "complex-root-fails",
        "prices-are-not-math",
        "percent-is-a-latex-comment",
        "degrees",
        "e-may-be-a-variable",
        "division-with-remainder",
        "approximation",
        "plain-text",
    ],
)
def test_claims_refuted_by_the_answers_own_text(text: str, first_refuted: str | None) -> None:
    report = check_claims(text)
    if first_refuted is None:
        assert report.refuted == ()
    else:
        assert report.refuted[0].startswith(first_refuted)


def test_every_stated_root_is_checked() -> None:
    report = check_claims(WRONG_ROOTS)
    assert report.checked == 3
    assert len(report.refuted) == 3  # none of 2, -1 ± i solves t³ - 4t - 4 = 0


def test_a_claim_in_another_paragraph_is_not_tied_to_the_equation() -> None:
    text = "Solve \\(t^3 - 4t - 4 = 0\\).\n\nLater, with \\(t = 2\\), we continue."
    assert check_claims(text).refuted == ()
