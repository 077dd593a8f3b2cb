"""The math of ``restlit diagnose variance`` (:mod:`restlit.experiments.variance`): pure functions
over float64 tensors, each with its formula. Relative variance of ``K`` vector estimates from their
moments or Gram matrix, the same estimated part by part (independent parts of each estimate), the
cosine between mean gradients, paired percentile-bootstrap intervals over the estimates, the
paper's bound per region, and the count sketch that reduces a gradient to a fixed size."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from restlit.objective import NUM_REGIONS


def relative_variance(trace: Tensor | float, total: Tensor | float, k: int) -> Tensor:
    """Relative variance of ``K`` vector estimates from their running moments.

    With ``trace = sum_k ||g_k||^2`` and ``total = ||sum_k g_k||^2`` (so ``mean g = sum_k g_k / K``)::

        ||mean g||^2                           = total / K^2
        V = 1/(K-1) sum_k ||g_k - mean g||^2   = (trace - total / K) / (K - 1)
        relative variance                      = V / ||mean g||^2

    (``V`` is unbiased for ``E||g - E g||^2``; ``||mean g||^2`` overestimates ``||E g||^2`` by
    ``V / K``.) Float64; ``inf`` when the mean gradient is 0.
    """
    var = gradient_variance(trace, total, k)
    mean_sq = torch.as_tensor(total, dtype=torch.float64) / (k * k)
    return torch.where(mean_sq > 0, var / mean_sq.clamp_min(1e-300), torch.full_like(var, math.inf))


def gradient_variance(trace: Tensor | float, total: Tensor | float, k: int) -> Tensor:
    """``V = 1/(K-1) sum_k ||g_k - mean g||^2 = (trace - total / K) / (K - 1)`` from the running
    moments ``trace = sum_k ||g_k||^2``, ``total = ||sum_k g_k||^2`` (float64)."""
    if k < 2:
        raise ValueError(f"a variance needs at least 2 estimates, got {k}")
    trace = torch.as_tensor(trace, dtype=torch.float64)
    total = torch.as_tensor(total, dtype=torch.float64)
    return (trace - total / k) / (k - 1)


def gram_relative_variance(gram: Tensor) -> Tensor:
    """:func:`relative_variance` from the ``[K, K]`` Gram matrix ``G_ij = <g_i, g_j>``:
    ``trace = sum_k G_kk``, ``total = sum_ij G_ij``."""
    return relative_variance(gram.diagonal().sum(), gram.sum(), gram.shape[0])


def stratified_relative_variance(gram: Tensor, parts: Tensor) -> Tensor:
    """Relative variance of ``K`` estimates ``g_k = sum_p g_pk`` whose ``P`` parts are drawn
    independently of each other, from the ``[K, K]`` Gram matrix ``G`` of the totals and the
    ``[P, K, K]`` Gram matrices ``G_p`` of each part's ``K`` draws::

        V_p                 = (tr G_p - sum G_p / K) / (K - 1)     (part p's unbiased variance)
        V                   = sum_p V_p                            (independent parts: Var sum = sum Var)
        ||mean g||^2        = sum G / K^2
        relative variance   = V / ||mean g||^2

    With ``P = 1`` it is :func:`gram_relative_variance`. Float64; ``inf`` when the mean is 0."""
    k = gram.shape[0]
    var = part_variances(parts).sum()
    mean_sq = gram.sum().to(torch.float64) / (k * k)
    return torch.where(mean_sq > 0, var / mean_sq.clamp_min(1e-300), torch.full_like(var, math.inf))


def part_variances(parts: Tensor) -> Tensor:
    """Each part's unbiased variance from the ``[P, K, K]`` Gram matrices ``G_p`` of its ``K`` draws::

        V_p = 1/(K-1) sum_k ||g_pk - mean_k g_pk||^2 = (tr G_p - sum G_p / K) / (K - 1)

    Returns ``[P]`` float64; their sum is the variance of the total when the parts are independent."""
    return gradient_variance(parts.diagonal(dim1=-2, dim2=-1).sum(-1), parts.sum((-2, -1)), parts.shape[-1])


def mean_cosine(cross: Tensor, gram_a: Tensor, gram_b: Tensor) -> Tensor:
    """Cosine between the mean gradients of two weightings on the same ``K`` batches::

        cos = <sum_i a_i, sum_j b_j> / (||sum a|| ||sum b||) = sum C / sqrt(sum G_a * sum G_b)

    with ``C_ij = <a_i, b_j>``, ``G_a``, ``G_b`` the Gram matrices (all ``[K, K]``); 0 for a zero mean."""
    den = (gram_a.sum() * gram_b.sum()).clamp_min(0).sqrt()
    return torch.where(den > 0, cross.sum() / den.clamp_min(1e-300), torch.zeros_like(den))


def _resampled(gram: Tensor, parts: Tensor | None, idx: Tensor) -> float:
    """The relative variance of the batches ``idx`` (plain, or by part when ``parts`` is given)."""
    if parts is None:
        return float(gram_relative_variance(gram[idx][:, idx]))
    return float(stratified_relative_variance(gram[idx][:, idx], parts[:, idx][:, :, idx]))


def _bootstrap_draws(grams: Sequence[Tensor], parts: Sequence[Tensor] | None, n_boot: int,
                     seed: int) -> list[list[float]]:
    """Each matrix's relative variance on ``n_boot`` resamples of the ``K`` batches (the same
    indices for every matrix; an all-equal resample, with no spread to measure, is skipped)."""
    k = grams[0].shape[0]
    g = torch.Generator().manual_seed(seed)
    parts = parts or [None] * len(grams)
    draws = []
    for _ in range(n_boot):
        idx = torch.randint(k, (k,), generator=g)
        if idx.unique().numel() >= 2:
            draws.append([_resampled(gram, part, idx) for gram, part in zip(grams, parts)])
    return draws


def _intervals(columns: list[list[float]], level: float) -> list[tuple[float, float]]:
    alpha = (1 - level) / 2
    return [(_quantile(d, alpha), _quantile(d, 1 - alpha)) for d in columns]


def bootstrap_relative_variance(grams: Sequence[Tensor], n_boot: int = 1000, seed: int = 0,
                                level: float = 0.95, parts: Sequence[Tensor] | None = None) -> list[tuple[float, float]]:
    """Percentile bootstrap intervals of :func:`gram_relative_variance` for several ``[K, K]`` Gram
    matrices over the same batches: each resample draws ``K`` batch indices with replacement and
    uses them for every matrix (``G[idx][:, idx]``). Returns ``(low, high)`` per matrix. With
    ``parts`` (each matrix's ``[P, K, K]`` part Grams), of :func:`stratified_relative_variance`."""
    draws = _bootstrap_draws(grams, parts, n_boot, seed)
    return _intervals([[d[i] for d in draws] for i in range(len(grams))], level)


def bootstrap_ratio(grams: Sequence[Tensor], reference: int = 0, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95, parts: Sequence[Tensor] | None = None) -> list[tuple[float, float]]:
    """Percentile bootstrap interval of each matrix's relative variance divided by the
    ``reference`` matrix's, same resamples for both (a paired ratio); by part with ``parts``."""
    draws = _bootstrap_draws(grams, parts, n_boot, seed)
    return _intervals([[d[i] / d[reference] if d[reference] > 0 else math.inf for d in draws]
                       for i in range(len(grams))], level)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return float(torch.quantile(torch.tensor(values, dtype=torch.float64), q))


def variance_bound(weights: Tensor, entropy: Tensor, regions: Tensor, mask: Tensor) -> Tensor:
    """The paper's variance bound of a weighted policy gradient, per region and in total, ``[R + 1]`` float64::

        b_r = sum_t m_t w_t^2 (1 - exp(-H_t)) [region_t = r],      b_total = sum_r b_r

    ``1 - exp(-H_t)`` bounds the expected squared norm of token ``t``'s score with respect to its
    logits, ``E||onehot(a) - p||^2 = 1 - sum_a p_a^2``, since ``sum_a p_a^2 = E_p[p] >= exp(E_p log p)
    = exp(-H)`` (Jensen). Low-entropy tokens contribute little however large their weight."""
    m = mask.reshape(-1).to(torch.float64)
    per_token = weights.reshape(-1).to(torch.float64) ** 2 * (1 - torch.exp(-entropy.reshape(-1).to(torch.float64)))
    out = torch.zeros(NUM_REGIONS + 1, dtype=torch.float64)
    out[:NUM_REGIONS].index_add_(0, regions.reshape(-1).long().cpu(), (per_token * m).cpu())
    out[NUM_REGIONS] = out[:NUM_REGIONS].sum()
    return out


class CountSketch:
    """A fixed random projection of a list of tensors (shapes ``sizes``) to ``dim`` numbers::

        S(x)_j = sum_{i : h(i) = j} s(i) x_i,      h(i) uniform in [0, dim), s(i) = +-1 (seeded)

    ``E <S x, S y> = <x, y>`` and ``Var <S x, S y> <= (||x||^2 ||y||^2 + <x, y>^2) / dim``. One int32
    code per coordinate (``h + dim [s < 0]``) is drawn once. ``dim = 0``: no projection (the
    flattened float64 vector)."""

    def __init__(self, sizes: Sequence[int], dim: int, seed: int = 0):
        self.dim = dim
        self.codes: list[Tensor] = []
        if dim:
            g = torch.Generator().manual_seed(seed)
            self.codes = [torch.randint(2 * dim, (n,), generator=g, dtype=torch.int32) for n in sizes]

    def __call__(self, tensors: Sequence[Tensor | None]) -> Tensor:
        if not self.dim:
            return torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors])
        acc = torch.zeros(2 * self.dim, dtype=torch.float64)
        for t, code in zip(tensors, self.codes):
            if t is not None:
                acc.index_add_(0, code, t.detach().reshape(-1).to("cpu", torch.float64))
        return acc[: self.dim] - acc[self.dim :]


__all__ = ["CountSketch", "bootstrap_ratio", "bootstrap_relative_variance", "gradient_variance",
           "gram_relative_variance", "mean_cosine", "part_variances", "relative_variance",
           "stratified_relative_variance", "variance_bound"]
