"""The regularised incomplete beta function, i.e. the CDF of a Beta distribution.

Pure standard library (no scipy): the continued fraction of DLMF 8.17.22, evaluated with the
modified Lentz method, on the side of `x` where it converges quickly (DLMF 8.17.4 gives the
other side by symmetry).
"""

from __future__ import annotations

import math

__all__ = ["beta_cdf", "beta_sf", "prob_beats_runner_up"]

_EPS = 1e-15
_TINY = 1e-300
_MAX_TERMS = 10_000


def _continued_fraction(x: float, a: float, b: float) -> float:
    """1 / (1 + d1 / (1 + d2 / (1 + ...))) with the DLMF 8.17.22 coefficients d_n."""

    def d(n: int) -> float:
        m = n // 2
        if n % 2:
            return -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        return m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))

    # Lentz for f = 0 + a1/(1 + a2/(1 + ...)), a1 = 1, a_{n+1} = d(n).
    f = _TINY
    c, dd = f, 0.0
    for j in range(1, _MAX_TERMS):
        numerator = 1.0 if j == 1 else d(j - 1)
        dd = 1.0 + numerator * dd
        dd = 1.0 / (dd if abs(dd) > _TINY else _TINY)
        c = 1.0 + numerator / c
        c = c if abs(c) > _TINY else _TINY
        delta = c * dd
        f *= delta
        if abs(delta - 1.0) < _EPS:
            return f
    raise ArithmeticError(f"incomplete beta did not converge for x={x}, a={a}, b={b}")


def beta_cdf(x: float, a: float, b: float) -> float:
    """P(X <= x) for X ~ Beta(a, b), a, b > 0 (the regularised incomplete beta I_x(a, b))."""
    if a <= 0 or b <= 0:
        raise ValueError(f"Beta parameters must be > 0, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - beta_cdf(1.0 - x, b, a)
    log_front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b) - math.log(a)
    return math.exp(log_front) * _continued_fraction(x, a, b)


def beta_sf(x: float, a: float, b: float) -> float:
    """P(X > x) for X ~ Beta(a, b)."""
    return 1.0 - beta_cdf(x, a, b)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def prob_beats_runner_up(
    top: float, runner_up: float, *, prior_a: float = 1.0, prior_b: float = 1.0
) -> float:
    """P(p_top > p_runner_up) given vote counts, under a Beta posterior.

    Restricted to the two leading answers, the share p of the top one has posterior
    Beta(top + prior_a, runner_up + prior_b) (uniform prior by default); the top answer is the
    better one when p > 1/2.
    """
    return beta_sf(0.5, top + prior_a, runner_up + prior_b)
