"""restlit.stats against hand-computed values and scipy-free identities."""

from __future__ import annotations

import math

import pytest

from restlit.stats import mean_interval, paired_difference, sign_test_p, t975, wilson_interval


def test_wilson_hand_case() -> None:
    # 5 of 8: p = 0.625; z^2 = 3.8415; centre = (0.625 + 0.2401) / 1.4802 = 0.5845;
    # half = 1.96 * sqrt(0.029297 + 0.015006) / 1.4802 = 0.2787 -> [0.3057, 0.8632]
    ci = wilson_interval(5, 8)
    assert ci.value == 0.625 and ci.n == 8
    assert ci.low == pytest.approx(0.3057, abs=1e-3)
    assert ci.high == pytest.approx(0.8632, abs=1e-3)


def test_wilson_edges_stay_in_unit_interval() -> None:
    zero, full = wilson_interval(0, 10), wilson_interval(10, 10)
    # k = 0: high = z^2/n / (1 + z^2/n) = 0.38415 / 1.38415 = 0.2775
    assert zero.low == 0.0 and zero.high == pytest.approx(0.2775, abs=1e-4)
    assert full.high == pytest.approx(1.0) and full.low == pytest.approx(1 - 0.2775, abs=1e-4)
    assert wilson_interval(0, 0).to_dict() == {"value": 0.0, "low": 0.0, "high": 1.0, "n": 0}
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_wilson_narrows_with_n() -> None:
    widths = [wilson_interval(n // 2, n).high - wilson_interval(n // 2, n).low for n in (8, 32, 128)]
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] == pytest.approx(widths[0] / 2, rel=0.25)


def test_percent_format() -> None:
    assert wilson_interval(5, 8).percent() == "62.5% [30.6, 86.3] (n=8)"


def test_mean_interval_hand_case() -> None:
    ci = mean_interval([1.0, 2.0, 3.0])
    # s = 1, t_2 = 4.303 -> half = 4.303 / sqrt(3)
    assert ci.value == 2.0
    assert ci.high - ci.value == pytest.approx(4.303 / math.sqrt(3), rel=1e-6)
    assert mean_interval([0.5]).low == mean_interval([0.5]).high == 0.5
    assert t975(1000) == pytest.approx(1.96, abs=1e-3)


def test_sign_test() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(5, 0) == pytest.approx(2 / 32)
    assert sign_test_p(3, 3) == 1.0
    assert sign_test_p(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_paired_difference() -> None:
    a = [1, 1, 1, 0, 1, 0]
    b = [0, 1, 0, 0, 0, 0]
    pd = paired_difference(a, b)
    assert (pd.wins, pd.losses) == (3, 0)
    assert pd.difference.value == pytest.approx(0.5)
    assert pd.p_value == pytest.approx(0.25)
    with pytest.raises(ValueError):
        paired_difference([1], [1, 0])
