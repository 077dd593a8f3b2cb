"""ResT's opposite, the "high-entropy minority tokens" rule (Wang et al. 2025, "Beyond the 80/20 Rule";
TRL's ``top_entropy_quantile``): only the top-``q`` highest-entropy tokens of a batch get gradient.

Where ResT up-weights the low-entropy, reward-carrying tokens (names, parameters, format), this rule
keeps only the high-entropy "forking" tokens. It is a weight mode of :func:`restlit.objective.token_weights`
(``objective.weights.mode: top-entropy``, ``objective.weights.top_entropy_quantile``), so it can be
ablated against ``uniform`` and ``entropy``. Pure functions over tensors, as in :mod:`restlit.objective`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def top_entropy_threshold(entropies: Sequence[Tensor], masks: Sequence[Tensor], quantile: float) -> Tensor:
    """The batch's entropy threshold ``tau``, a float64 scalar: the ``1 - q`` quantile (``q = quantile``
    in (0, 1]; linear interpolation, as ``torch.quantile`` and TRL) of the entropies ``H_t`` of every valid
    token (``m_t > 0``) of every tensor in ``entropies`` (the step's groups may differ in width)::

        tau = Quantile_{1 - q}({H_t : m_t > 0})

    ``+inf`` when no token is valid (nothing gets gradient)."""
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"top_entropy_quantile must be in (0, 1], got {quantile}")
    valid = [h.detach().to(torch.float64)[m > 0].reshape(-1) for h, m in zip(entropies, masks, strict=True)]
    values = torch.cat(valid) if valid else torch.zeros(0, dtype=torch.float64)
    if values.numel() == 0:
        return torch.tensor(torch.inf, dtype=torch.float64)
    return torch.quantile(values, 1.0 - quantile)


def top_entropy_weights(entropy: Tensor, mask: Tensor, threshold: Tensor | float) -> Tensor:
    """The top-entropy token weights, ``[B, T]`` float32: 1 on valid tokens at or above the threshold
    ``tau`` (:func:`top_entropy_threshold` of the whole batch), 0 elsewhere::

        w_t = m_t [H_t >= tau]

    With ``q = 1`` every valid token weighs 1 (GRPO). Under the ``token-mean-weighted`` aggregation
    the loss denominator ``sum m w`` counts only the kept tokens, as in the paper's masked token mean."""
    tau = torch.as_tensor(threshold, dtype=torch.float64, device=entropy.device)
    keep = (entropy.detach().to(torch.float64) >= tau) & (mask > 0)
    return keep.to(torch.float32)


__all__ = ["top_entropy_threshold", "top_entropy_weights"]
