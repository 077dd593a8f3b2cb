"""The k3 KL stays bounded at any drift, as verl's ``low_var_kl`` (issue 33): the log-ratio is
clamped to [-20, 20] and the estimate to [-10, 10]."""

from __future__ import annotations

import math

import pytest
import torch

from restlit.objective import kl_penalty

F64 = torch.float64


def verl_low_var_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """verl's ``kl_penalty(..., "low_var_kl")``, written out (float64 reference)."""
    kl = torch.clamp(ref_logp - logp, min=-20, max=20)
    return torch.clamp(torch.exp(kl) - kl - 1, min=-10, max=10)


def test_k3_matches_verl_at_any_drift() -> None:
    d = torch.linspace(-60, 60, 4001, dtype=F64)
    logp = torch.zeros_like(d)
    k3 = kl_penalty(logp, d, "k3")
    assert torch.isfinite(k3).all() and (k3 >= 0).all() and (k3 <= 10).all()
    torch.testing.assert_close(k3, verl_low_var_kl(logp, d), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d, expected", [
    (math.log(2), 1 - math.log(2)),  # inside the clamps: exp(d) - d - 1
    (2.0, math.exp(2) - 3),
    (-5.0, math.exp(-5) + 4),
    (3.0, 10.0),  # exp(3) - 4 = 16.09 > 10
    (30.0, 10.0),  # log-ratio clamped to 20, then the estimate to 10
    (-30.0, 10.0),  # exp(-20) + 19 > 10
    (800.0, 10.0),  # exp(800) would be inf
])
def test_k3_hand_cases(d: float, expected: float) -> None:
    k = kl_penalty(torch.zeros(1, dtype=F64), torch.tensor([d], dtype=F64), "k3")
    assert k.item() == pytest.approx(expected, rel=1e-12)


def test_k3_gradient_is_finite_at_large_drift() -> None:
    logp = torch.tensor([-900.0, 0.0, 5.0], dtype=F64, requires_grad=True)
    kl_penalty(logp, torch.zeros(3, dtype=F64), "k3").sum().backward()
    assert torch.isfinite(logp.grad).all()
    assert logp.grad[0] == 0  # clamped: no gradient, as verl's
