"""Intervals for the small samples restlit evaluates on: pure functions of counts and lists, no torch.

A demo-sized evaluation has a few dozen items, so every accuracy restlit reports carries its item
count and a 95% interval, and every comparison of two models on the same items is paired.

- :func:`wilson_interval`: the Wilson score interval of a proportion ``k / n``,
  ``(p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``; unlike the normal interval it
  stays inside [0, 1] and is not empty at ``k = 0`` or ``k = n``.
- :func:`mean_interval`: mean of a list with a Student-t interval ``mean -/+ t_{n-1} s / sqrt(n)``
  (the spread over seeds); a single value has no interval.
- :func:`paired_difference`: mean of ``a_i - b_i`` over the same items with a t interval and the
  exact two-sided sign-test p-value over the items that differ (McNemar's exact test when the
  scores are 0/1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054

# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom; beyond 30 the normal's.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


def t975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (table to 30, then z)."""
    if dof < 1:
        raise ValueError("t quantile needs at least one degree of freedom")
    return _T975[dof - 1] if dof <= len(_T975) else Z95


@dataclass(frozen=True)
class Interval:
    """An estimate with a 95% interval ``[low, high]`` from ``n`` observations."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}

    def percent(self, digits: int = 1) -> str:
        """``'62.5% [40.9, 80.0] (n=16)'``: the form every restlit table prints."""
        return (f"{100 * self.value:.{digits}f}% [{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"
                f" (n={self.n})")


def wilson_interval(successes: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval of the proportion ``successes / n`` (formula in the module docstring).

    ``n = 0`` gives the uninformative ``[0, 1]`` around 0; ``successes`` must lie in ``[0, n]``.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Interval(0.0, 0.0, 1.0, 0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n)


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean with a Student-t 95% interval; one value gives a zero-width interval at that value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean of no values")
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, mean, mean, 1)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    half = t975(n - 1) * math.sqrt(var / n)
    return Interval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class PairedDifference:
    """``mean(a - b)`` over paired items, its t interval, and the sign test over differing items."""

    difference: Interval
    wins: int      # items where a > b
    losses: int    # items where a < b
    p_value: float

    def to_dict(self) -> dict[str, object]:
        return {"difference": self.difference.to_dict(), "wins": self.wins, "losses": self.losses,
                "p_value": self.p_value}


def sign_test_p(wins: int, losses: int) -> float:
    """Exact two-sided sign-test p-value: ``min(1, 2 P[X <= min(wins, losses)])``, X ~ Bin(w + l, 1/2)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Compare two models scored on the same items (``a[i]`` and ``b[i]`` belong to item ``i``)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same items: {len(a)} vs {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    wins = sum(d > 0 for d in diffs)
    losses = sum(d < 0 for d in diffs)
    return PairedDifference(mean_interval(diffs), wins, losses, sign_test_p(wins, losses))
