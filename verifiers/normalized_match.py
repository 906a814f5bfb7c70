"""A lenient, Qwen2.5-Math-style "normalise and compare" equivalence, kept as a second opinion.

The Qwen2.5-Math evaluation harness (and the many harnesses forked from it) decides correctness by
normalising both strings and then comparing numbers with a *relative tolerance of 1e-4*, also
accepting the reference divided or multiplied by 100 (the "percent" rule), and finally trying
symbolic equality. This module re-implements that behaviour (our code, same rules) so the grader
can log every case where it disagrees with math-verify. It is deliberately lenient, and wrong in
known ways that the tests pin down:

* `1000000` = `1000001` (relative difference 1e-6 < 1e-4);
* `50` = `0.5` and `0.5` = `50` (x100 rule);
* intervals and tuples compare element-wise, ignoring bracket types, so `(1,2]` = `[1,2)`.

Bare comma lists (`1,-2`) compare as unordered collections, matrices element-wise.

Like `verify_pair`, `qwen_style_equal` is blocking (sympy) and belongs in the equivalence worker
pool: `EquivalenceChecker(verify_fn=qwen_style_equal)`.
"""

from __future__ import annotations

import cmath
import re
from typing import Any

from verifiers.answers import normalize_answer

__all__ = ["REL_TOL", "canonical_text", "parse_number", "qwen_style_equal"]

REL_TOL = 1e-4
"""The harness's numeric tolerance (relative)."""

_TRAILING_UNIT = re.compile(
    r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z ]*\}\s*(?:\^\s*\{?\d\}?)?\s*$"
)
_ASSIGNMENT = re.compile(r"^[a-z]\s*(?:=|\\in(?![a-z]))\s*(?=[^=])")
_MATRIX = re.compile(r"^\\begin\{[pbv]?matrix\}(.*)\\end\{[pbv]?matrix\}$", re.DOTALL)
_DECIMAL = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$")
_FRACTION = re.compile(r"^([-+]?)\\frac\{([-+]?[\d.]+)\}\{([-+]?[\d.]+)\}$")
_SLASH = re.compile(r"^([-+]?[\d.]+)/([-+]?[\d.]+)$")
_CHOICE = re.compile(r"^[a-e]$")


def canonical_text(s: str) -> str:
    """Aggressive cleanup: `normalize_answer`, then drop units, `%`, case and `x=` prefixes."""
    s = _TRAILING_UNIT.sub("", s.strip())
    s = normalize_answer(s).lower()
    s = s.replace("\\%", "").replace("%", "")
    return _ASSIGNMENT.sub("", s)


def parse_number(s: str) -> float | None:
    """A plain number (`-3`, `2.50`, `1e3`, `\\frac{1}{2}`, `3/4`) as float, else None."""
    try:
        if _DECIMAL.match(s):
            return float(s)
        m = _FRACTION.match(s)
        if m:
            sign, num, den = m.groups()
            value = float(num) / float(den)
            return -value if sign == "-" else value
        m = _SLASH.match(s)
        if m:
            return float(m.group(1)) / float(m.group(2))
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _close(a: complex, b: complex) -> bool:
    return cmath.isclose(a, b, rel_tol=REL_TOL)


def _split_top_level(s: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _as_sequence(s: str) -> list[str] | None:
    """Items of a bracketed tuple / interval (bracket types ignored) or of a matrix."""
    matrix = _MATRIX.match(s)
    if matrix:
        return [cell for row in matrix.group(1).split("\\\\") for cell in row.split("&")]
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        items = _split_top_level(s[1:-1])
        return items if len(items) > 1 else None
    return None


def _as_bare_list(s: str) -> list[str] | None:
    """Items of an unbracketed comma list such as `1,-2` (an unordered set of solutions)."""
    items = _split_top_level(s)
    return items if len(items) > 1 else None


def _multiset_equal(gold: list[str], pred: list[str]) -> bool:
    if len(gold) != len(pred):
        return False
    unused = list(pred)
    for g in gold:
        match = next((p for p in unused if _equal(g, p, percent=False)), None)
        if match is None:
            return False
        unused.remove(match)
    return True


def _sympy_value(s: str) -> Any | None:
    """`s` as a sympy expression (right-hand side for an equation), or None."""
    from latex2sympy2_extended import latex2sympy  # heavy import, worker-side only
    from sympy import Eq

    try:
        expr = latex2sympy(s)
    except Exception:
        return None
    if isinstance(expr, Eq):
        expr = expr.rhs
    return expr


def _symbolic_equal(gold: str, pred: str) -> bool:
    from sympy import N, simplify

    a, b = _sympy_value(gold), _sympy_value(pred)
    if a is None or b is None:
        return False
    try:
        if simplify(a - b) == 0:
            return True
    except Exception:
        pass
    try:
        return _close(complex(N(a)), complex(N(b)))
    except Exception:
        return False


def _equal(gold: str, pred: str, *, percent: bool) -> bool:
    if gold == pred:
        return True
    if _CHOICE.match(gold) or _CHOICE.match(pred):
        return False
    g_num, p_num = parse_number(gold), parse_number(pred)
    if g_num is not None and p_num is not None:
        candidates = [g_num / 100, g_num, g_num * 100] if percent else [g_num]
        return any(_close(p_num, c) for c in candidates)
    g_seq, p_seq = _as_sequence(gold), _as_sequence(pred)
    if g_seq is not None and p_seq is not None:
        return len(g_seq) == len(p_seq) and all(
            _equal(g, p, percent=False) for g, p in zip(g_seq, p_seq, strict=True)
        )
    g_list, p_list = _as_bare_list(gold), _as_bare_list(pred)
    if g_list is not None and p_list is not None:
        return _multiset_equal(g_list, p_list)
    return _symbolic_equal(gold, pred)


def qwen_style_equal(gold: str, pred: str) -> bool:
    """The lenient harness verdict on two extracted answers (see the module docstring)."""
    return _equal(canonical_text(gold), canonical_text(pred), percent=True)
