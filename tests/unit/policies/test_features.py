from __future__ import annotations

import math

import numpy as np
import pytest

from policies.features import FEATURE_NAMES, extract_features, feature_matrix

FIGURE = '[asy]\ndraw((0,0)--(10,0)--(5,8)--cycle);\nlabel("$A$",(0,0),SW);\n[/asy]'


@pytest.mark.parametrize(
    ("prompt", "on", "off"),
    [
        pytest.param(
            "Prove that there are infinitely many primes.",
            {"kw_prove", "topic_number_theory"},
            {"kw_counting", "has_code", "has_figure"},
            id="proof",
        ),
        pytest.param(
            "How many positive divisors does 196 have?",
            {"kw_counting", "topic_number_theory"},
            {"kw_prove", "answer_format"},
            id="counting",
        ),
        pytest.param(
            "Find all real $x$ such that $x^2 = 4$.",
            {"kw_find_all"},
            {"kw_simple_ask"},
            id="find-all",
        ),
        pytest.param(
            "What is $1+1$? Express your answer as a common fraction.",
            {"kw_simple_ask", "answer_format"},
            {"kw_find_all"},
            id="simple-with-format",
        ),
        pytest.param(
            "Write a function:\n```python\ndef f(x):\n    return x\n```",
            {"has_code"},
            {"topic_geometry"},
            id="code",
        ),
        pytest.param(
            f"In the triangle below, what is the measure of angle $A$? {FIGURE}",
            {"has_figure", "topic_geometry", "kw_simple_ask"},
            {"kw_prove"},
            id="figure",
        ),
        pytest.param(
            "A fair die is rolled at random. What is the probability of a 6?",
            {"topic_probability"},
            {"topic_polynomial"},
            id="probability",
        ),
        pytest.param(
            "The polynomial $p(x)$ has degree 3 and roots 1, 2, 3. Find the smallest root.",
            {"topic_polynomial", "kw_extremum"},
            {"topic_probability"},
            id="polynomial",
        ),
    ],
)
def test_keyword_and_marker_flags(prompt: str, on: set[str], off: set[str]) -> None:
    values = extract_features(prompt).values
    assert {name for name in on if values[name] == 1.0} == on
    assert {name for name in off if values[name] == 0.0} == off


def test_figure_code_does_not_count_as_prompt_length_or_digits() -> None:
    bare = extract_features("What is angle $A$?").values
    drawn = extract_features(f"What is angle $A$? {FIGURE}").values
    assert drawn["log_chars"] == pytest.approx(math.log1p(len("What is angle $A$?  ")))
    assert drawn["digits"] == bare["digits"] == 0.0
    assert drawn["math_spans"] == bare["math_spans"]


@pytest.mark.parametrize(
    ("prompt", "name", "expected"),
    [
        pytest.param("abc", "log_chars", math.log1p(3), id="length"),
        pytest.param("12 and 345", "digits", math.log1p(5), id="digits"),
        pytest.param("$a$ and $b$", "math_spans", math.log1p(2), id="math-spans"),
        pytest.param("\\frac{1}{2}", "latex_density", 100.0 / 11, id="latex-density"),
        pytest.param("$\\sum_k \\binom{n}{k}$", "advanced_math", math.log1p(2), id="advanced"),
        pytest.param("a = b = c", "equations", math.log1p(2), id="equations"),
        pytest.param("Why? How?", "questions", math.log1p(2), id="questions"),
    ],
)
def test_numeric_features(prompt: str, name: str, expected: float) -> None:
    assert extract_features(prompt).values[name] == pytest.approx(expected)


def test_vectors_follow_the_canonical_order_and_name_missing_features() -> None:
    features = extract_features("How many?")
    vector = features.vector()
    assert vector.shape == (len(FEATURE_NAMES),)
    assert vector[FEATURE_NAMES.index("kw_counting")] == 1.0
    np.testing.assert_array_equal(feature_matrix(["How many?", "x"])[0], vector)
    assert feature_matrix([]).shape[0] == 0
    with pytest.raises(KeyError, match="no_such_feature"):
        features.vector(("no_such_feature",))
