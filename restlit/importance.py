"""The rollout engine's mismatch with the trainer: truncated importance sampling (TIS) and its statistics.

An engine that samples with other numerics (vLLM's kernels, another dtype) draws from a slightly
different policy than the trainer's at the same weights. These pure functions measure that gap per
token and, with ``rollout.tis``, correct the policy-gradient term for it. Re-exported by
:mod:`restlit.objective`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["tis_advantages", "tis_statistics"]


def tis_advantages(advantages: Tensor, logp: Tensor, engine_logp: Tensor, mask: Tensor, cap: float) -> Tensor:
    """Per-token advantages with truncated importance sampling, ``[B, T]``::

        A'_bt = A_b * min(exp(logp_bt - engine_logp_bt), cap)     (masked tokens: ratio 1)

    ``logp`` is the trainer's log-prob of the sampled token at the sampling weights, ``engine_logp`` the
    engine's. The PPO-clip term is positively homogeneous in ``A``, so scaling a token's advantage by
    ``c >= 0`` scales exactly its policy-gradient loss by ``c``: this is TIS on the policy-gradient term.
    """
    ratio = ((logp - engine_logp).float() * mask).exp()
    return advantages[:, None] * ratio.clamp(max=cap)


def tis_statistics(logp: Tensor, engine_logp: Tensor, mask: Tensor, cap: float) -> dict[str, float]:
    """How far the engine's sampling log-probs are from the trainer's, over valid tokens (any equal shapes;
    flatten and concatenate groups of different widths). With ``d = logp - engine_logp``, ``r = exp(d)``,
    ``n = sum m``::

        rollout/logp_abs_diff      = sum m |d| / n            rollout/is_ratio          = sum m r / n
        rollout/is_ratio_max       = max_{m > 0} r            rollout/is_truncated_frac = #{m > 0, r > cap} / n

    Empty when there is no valid token.
    """
    valid = mask > 0
    n = float(valid.sum())
    if n == 0:
        return {}
    d = (logp - engine_logp).to(torch.float64)[valid]
    r = d.exp()
    return {"rollout/logp_abs_diff": float(d.abs().sum()) / n, "rollout/is_ratio": float(r.sum()) / n,
            "rollout/is_ratio_max": float(r.max()), "rollout/is_truncated_frac": float((r > cap).sum()) / n}
