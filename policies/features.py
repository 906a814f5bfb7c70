"""Cheap prompt features for the fast / slow router (stage 1), computed in microseconds.

Every feature is a named function of the prompt text, listed in :data:`FEATURES` in a fixed
order; a router model stores the names it was fitted with, so adding a feature never silently
shifts an old model's weights. Features are counts or flags, log-scaled where they grow without
bound. Figure code (``[asy]…[/asy]``, TikZ) is removed before measuring length, since a long
drawing says little about how hard the question is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np
from pydantic import BaseModel, ConfigDict

_FIGURE = re.compile(r"\[asy\].*?\[/asy\]|\\begin\{tikzpicture\}.*?\\end\{tikzpicture\}", re.S)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_MATH_DELIMITER = re.compile(r"\$|\\\(|\\\)|\\\[|\\\]")
_ADVANCED = re.compile(
    r"\\(sum|prod|int|lim|binom|log|ln|sin|cos|tan|sec|csc|cot|omega|zeta|infty|cdots|dots)"
    r"(?![A-Za-z])"
)
_CODE = re.compile(
    r"```|\bdef \w+\(|\bclass \w+|#include|\bfunction\b|\bpublic static\b|\breturn\b|;\s*$",
    re.M,
)


def _words(pattern: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + pattern + r")\b", re.I)


_PROVE = _words(r"prove|show that|demonstrate that|justify")
_COUNTING = _words(r"how many|number of|count|in how many ways")
_FIND_ALL = _words(r"find all|sum of all|product of all|all possible|all real|all integers?")
_EXTREMUM = _words(r"minimum|maximum|smallest|largest|least|greatest")
_SIMPLE_ASK = _words(r"what is|evaluate|compute|simplify|calculate|round")
_ANSWER_FORMAT = _words(
    r"common fraction|simplest radical form|in terms of|interval notation|ordered pair"
    r"|express your answer|separated by commas|decimal"
)
_PROBABILITY = _words(r"probability|expected|randomly|at random")
_GEOMETRY = _words(r"triangle|circle|angle|polygon|area|perimeter|radius|square|hexagon")
_NUMBER_THEORY = _words(
    r"primes?|divisible|divisors?|remainders?|modulo|integers?|digits?|gcd|lcm|factors?|multiples?"
)
_POLYNOMIAL = _words(r"polynomial|roots?|degree|coefficients?")
_CONSTRAINT_LINKS = _words(r"such that|where|if|given that|suppose|let")


def _prose(prompt: str) -> str:
    return _FIGURE.sub(" ", prompt)


def _log_chars(p: str) -> float:
    return math.log1p(len(_prose(p)))


def _latex_density(p: str) -> float:
    text = _prose(p)
    return 100.0 * len(_LATEX_COMMAND.findall(text)) / max(len(text), 1)


def _math_spans(p: str) -> float:
    return math.log1p(len(_MATH_DELIMITER.findall(_prose(p))) / 2)


def _digits(p: str) -> float:
    return math.log1p(sum(ch.isdigit() for ch in _prose(p)))


def _count(pattern: re.Pattern[str]) -> Callable[[str], float]:
    return lambda p: math.log1p(len(pattern.findall(_prose(p))))


def _flag(pattern: re.Pattern[str]) -> Callable[[str], float]:
    return lambda p: 1.0 if pattern.search(_prose(p)) else 0.0


FEATURES: Mapping[str, Callable[[str], float]] = MappingProxyType(
    {
        "log_chars": _log_chars,
        "latex_density": _latex_density,
        "math_spans": _math_spans,
        "digits": _digits,
        "advanced_math": _count(_ADVANCED),
        "equations": lambda p: math.log1p(_prose(p).count("=")),
        "has_figure": lambda p: 1.0 if _FIGURE.search(p) else 0.0,
        "has_code": _flag(_CODE),
        "kw_prove": _flag(_PROVE),
        "kw_counting": _flag(_COUNTING),
        "kw_find_all": _flag(_FIND_ALL),
        "kw_extremum": _flag(_EXTREMUM),
        "kw_simple_ask": _flag(_SIMPLE_ASK),
        "answer_format": _flag(_ANSWER_FORMAT),
        "topic_probability": _flag(_PROBABILITY),
        "topic_geometry": _flag(_GEOMETRY),
        "topic_number_theory": _flag(_NUMBER_THEORY),
        "topic_polynomial": _flag(_POLYNOMIAL),
        "constraints": _count(_CONSTRAINT_LINKS),
        "questions": lambda p: math.log1p(_prose(p).count("?")),
    }
)
"""Feature name → function of the prompt, in the canonical order."""

FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)


class PromptFeatures(BaseModel):
    """Named feature values of one prompt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    values: dict[str, float]

    def vector(self, names: tuple[str, ...] = FEATURE_NAMES) -> np.ndarray:
        """Values in the order of ``names``; KeyError naming a feature this prompt lacks."""
        missing = [n for n in names if n not in self.values]
        if missing:
            raise KeyError(f"unknown features {missing}; known: {sorted(self.values)}")
        return np.array([self.values[n] for n in names], dtype=float)


def extract_features(prompt: str) -> PromptFeatures:
    """All features of :data:`FEATURES` for ``prompt``."""
    return PromptFeatures(values={name: fn(prompt) for name, fn in FEATURES.items()})


def feature_matrix(prompts: Sequence[str], names: tuple[str, ...] = FEATURE_NAMES) -> np.ndarray:
    """Rows of feature vectors, one per prompt."""
    if not prompts:
        return np.zeros((0, len(names)))
    return np.array([extract_features(p).vector(names) for p in prompts])
