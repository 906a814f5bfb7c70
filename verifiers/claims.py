"""Claims an answer makes that sympy can check from its own text: stage 3's self-check.

A fast answer that is confidently wrong often says so itself: it writes an arithmetic step that
is false (``\\frac{2016}{128} = 15``) or names as roots of an equation values that do not solve
it ("the roots of :math:`t^3 - 4t - 4 = 0` are :math:`t = 2, -1 \\pm i`"). Both can be checked
from the text alone, with no reference answer:

- **arithmetic**: in a math span ``a = b = c``, each pair of neighbouring sides that are both
  constants must be equal (to the precision a decimal side is written with);
- **solutions**: a span ``x = v1, v2, …`` (one letter, constant values) must solve the nearest
  earlier polynomial equation in ``x`` alone of the same paragraph.

Spans with approximations, inequalities, congruences, text, degrees, percentages (``%`` is a
LaTeX comment) or division with remainder are not read, nor ones where a bare ``e`` could be a
variable; a span that does not parse is skipped. Each refuted claim is returned as written, so the
decision that escalates on it can name it. Blocking (sympy); the service calls it off the event
loop under its own timeout, and sizes are bounded here (:data:`MAX_SPANS`, :data:`MAX_SPAN_CHARS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ClaimReport", "check_claims"]

MAX_SPANS = 200
"""Math spans read per answer, at most."""
MAX_SPAN_CHARS = 160
"""Longer spans are not read (a long expression is rarely a checkable step and slow to parse)."""

# A "$…$" span closed right before a digit is two prices ("$900 = … = $270"), not math.
_SPAN = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]|\$\$(.+?)\$\$|\$([^$\n]+?)\$(?![\d$])", re.S)
_PARAGRAPH = re.compile(r"\n\s*\n")
_UNCHECKABLE = re.compile(
    r"\\(?:approx|sim|neq?|leq?|geq?|lt|gt|pm|mp|implies|Rightarrow|to|text|mathrm|equiv|pmod"
    r"|mod|div|quad|qquad|cdots|ldots|dots|infty|lim|sum|prod|int|cup|cap|in|subset)(?![A-Za-z])"
    r"|circ|%|[<>≈≠≤≥°:;]|\^\{?\s*\d{4,}|!"
)
_SIZING = re.compile(r"\\(?:left|right|displaystyle|[,;! ])")
_DECIMALS = re.compile(r"\d\.(\d+)")


class ClaimReport(BaseModel):
    """The checkable claims of one answer: how many were checked and which ones are false."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    checked: int = Field(0, ge=0)
    refuted: tuple[str, ...] = Field((), description="Each false claim, as written.")


def _spans(paragraph: str) -> Iterator[str]:
    for match in _SPAN.finditer(paragraph):
        yield next(g for g in match.groups() if g is not None)


def _clean(latex: str) -> str:
    text = _SIZING.sub(" ", latex)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    # "5(56)" is a product; the parser reads a digit before "(" otherwise.
    text = re.sub(r"(\d|\))\s*\(", r"\1\\cdot(", text)
    return text.strip().rstrip(".,")


def _parse(latex: str) -> Any | None:
    """A sympy expression (``i`` read as the imaginary unit), or None."""
    import sympy
    from latex2sympy2_extended import latex2sympy  # heavy import, off the event loop only

    if not latex or len(latex) > MAX_SPAN_CHARS:
        return None
    try:
        expr = latex2sympy(latex)
    except Exception:  # unparseable LaTeX is simply not a checkable claim
        return None
    if not isinstance(expr, sympy.Expr) or expr.has(sympy.E):
        return None  # a bare "e" is as often a variable as Euler's number
    return expr.subs(sympy.Symbol("i"), sympy.I)


def _tolerance(*sides: str) -> float:
    digits = [len(d) for side in sides for d in _DECIMALS.findall(side)]
    return 0.51 * 10.0 ** -min(digits) if digits else 0.0


def _equal(a: Any, b: Any, tol: float) -> bool | None:
    """Whether two constants are equal (None: not comparable as numbers)."""
    import sympy

    try:
        x, y = complex(sympy.N(a)), complex(sympy.N(b))
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, AttributeError):
        return None
    if x != x or y != y:  # NaN
        return None
    return abs(x - y) <= max(tol, 1e-6 * max(1.0, abs(x), abs(y)))


def _claimed_values(sides: list[str]) -> tuple[str, list[Any]] | None:
    """``x = v1, v2, …`` → ("x", [v1, v2, …]) when every value is a constant."""
    if len(sides) != 2 or not re.fullmatch(r"\s*[A-Za-z]\s*", sides[0]):
        return None
    values = [_parse(_clean(v)) for v in sides[1].split(",")]
    if any(v is None or v.free_symbols for v in values):
        return None
    return sides[0].strip(), values


def check_claims(text: str) -> ClaimReport:
    """Check the arithmetic steps and stated solutions of ``text``; see the module docstring."""
    import sympy

    checked, spans = 0, 0
    refuted: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        equations: list[tuple[Any, Any]] = []  # (lhs - rhs, its one symbol), latest first
        for raw in _spans(paragraph):
            spans += 1
            if spans > MAX_SPANS:
                return ClaimReport(checked=checked, refuted=tuple(refuted))
            body = _clean(raw)
            if _UNCHECKABLE.search(body) or len(body) > MAX_SPAN_CHARS:
                continue
            sides = re.split(r"(?<![=])=(?!=)", body)
            if len(sides) < 2:
                continue
            claim = _claimed_values(sides)
            if claim is not None:
                name, values = claim
                symbol = sympy.Symbol(name)
                equation = next((e for e, s in equations if s == symbol), None)
                if equation is None:
                    continue
                for value in values:
                    ok = _equal(equation.subs(symbol, value), 0, 0.0)
                    if ok is None:
                        continue
                    checked += 1
                    if not ok:
                        refuted.append(
                            f"{name} = {sympy.latex(value)} does not solve "
                            f"{sympy.latex(equation)} = 0"
                        )
                continue
            exprs = [_parse(_clean(side)) for side in sides]
            for a, b, sa, sb in zip(exprs, exprs[1:], sides, sides[1:], strict=False):
                if a is None or b is None or a.free_symbols or b.free_symbols:
                    continue
                ok = _equal(a, b, _tolerance(sa, sb))
                if ok is None:
                    continue
                checked += 1
                if not ok:
                    refuted.append(f"{sa.strip()} = {sb.strip()}")
            if len(sides) == 2 and exprs[0] is not None and exprs[1] is not None:
                difference = exprs[0] - exprs[1]
                symbols = difference.free_symbols
                if len(symbols) == 1 and difference.is_polynomial(*symbols):
                    equations.insert(0, (difference, next(iter(symbols))))
    return ClaimReport(checked=checked, refuted=tuple(refuted))
