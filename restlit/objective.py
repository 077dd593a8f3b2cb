"""The ResT objective as pure functions over tensors: token log-probs and entropy, token weights, loss.

Conventions shared by every function here:

- ``B`` sequences, ``T`` completion positions, ``V`` vocabulary, ``H`` hidden size, ``R = len(Region)``.
- ``mask`` is a float ``[B, T]`` tensor, 1 on completion tokens that take part in the loss (EOS included),
  0 on padding. ``regions`` is an integer ``[B, T]`` tensor of ``int(Region.X)`` values.
- Everything that is summed across micro-batches or ranks is exposed as a sum plus a count (region entropy
  statistics, loss denominators), so a caller can all-reduce it before dividing; nothing here talks to
  ``torch.distributed`` itself.

The pieces, in the order a training step uses them::

    logp, ent = logprobs_and_entropy_from_hidden(hidden, lm_head.weight, tokens, mask=mask)
    stats = region_entropy_stats(ent, regions, mask)              # all-reduce (sum) across ranks
    w = token_weights(regions, mask, weight_cfg, region_stats=stats, progress=nu, step=s)
    denom = loss_denominator(mask, w, loss_cfg.aggregation)       # summed over the whole optimizer step
    loss, metrics = policy_loss(logp, old_logp, adv, mask, w, config=loss_cfg, denominator=denom)
    per_region = region_weight_metrics(region_stats(w, regions, mask))   # weight and token share per region

The chunked LM-head kernel behind the first line lives in :mod:`restlit.kernels.lmhead`; the
settings (:class:`WeightConfig`, :class:`LossConfig`) in :mod:`restlit.config.method`. Both are
re-exported here.

With an engine that reports its sampling log-probs, :func:`tis_advantages` applies truncated importance
sampling and :func:`tis_statistics` measures the engine / trainer mismatch (both in
:mod:`restlit.importance`, re-exported here).
"""

from __future__ import annotations

import torch
from torch import Tensor

from restlit.config.method import (
    AdvantageScaling,
    Aggregation,
    KLEstimator,
    LossConfig,
    WeightConfig,
)
from restlit.importance import tis_advantages, tis_statistics
from restlit.kernels.lmhead import logprobs_and_entropy, logprobs_and_entropy_from_hidden
from restlit.regions import Region
from restlit.topentropy import top_entropy_threshold, top_entropy_weights

NUM_REGIONS = len(Region)

__all__ = [
    "NUM_REGIONS",
    "LossConfig",
    "WeightConfig",
    "aggregate",
    "entropy_weights",
    "grpo_advantages",
    "kl_penalty",
    "logprobs_and_entropy",
    "logprobs_and_entropy_from_hidden",
    "loss_denominator",
    "policy_loss",
    "ppo_clip_loss",
    "region_entropy_stats",
    "region_mean_entropy",
    "region_priors",
    "region_stats",
    "region_weight_metrics",
    "static_region_weights",
    "static_weights",
    "tis_advantages",
    "tis_statistics",
    "token_weights",
    "top_entropy_threshold",
    "top_entropy_weights",
]


# ---------------------------------------------------------------------------------------------------------
# Region entropy statistics
# ---------------------------------------------------------------------------------------------------------


def region_stats(values: Tensor, regions: Tensor, mask: Tensor) -> Tensor:
    """Per-region sums of ``values`` and token counts over valid tokens, as one ``[2, R]`` float64 tensor.

    ``stats[0, r] = sum_t m_t x_t [region_t = r]`` and ``stats[1, r] = sum_t m_t [region_t = r]``.
    Both rows are sums, so ``all_reduce(stats, SUM)`` across ranks (and adding across micro-batches) gives the
    global statistics; take means only afterwards with :func:`region_mean_entropy`.
    """
    m = mask.reshape(-1).to(torch.float64)
    r = regions.reshape(-1).long()
    stats = torch.zeros(2, NUM_REGIONS, dtype=torch.float64, device=values.device)
    stats[0].index_add_(0, r, values.detach().reshape(-1).to(torch.float64) * m)
    stats[1].index_add_(0, r, m)
    return stats


def region_entropy_stats(entropy: Tensor, regions: Tensor, mask: Tensor) -> Tensor:
    """Per-region entropy sums and token counts, ``[2, R]``: :func:`region_stats` of the entropies,
    ``stats[0, r] = sum_t m_t H_t [region_t = r]``, ``stats[1, r] = sum_t m_t [region_t = r]``."""
    return region_stats(entropy, regions, mask)


def region_mean_entropy(stats: Tensor) -> Tensor:
    """``H_r = stats[0, r] / stats[1, r]``, ``[R]``; 0 for regions without tokens (their weight is never used)."""
    return torch.where(stats[1] > 0, stats[0] / stats[1].clamp_min(1e-12), torch.zeros_like(stats[0]))


def region_weight_metrics(weight_stats: Tensor) -> dict[str, float]:
    """The weight each region got and its share of the tokens, from :func:`region_stats` of the token
    weights (summed over the step's groups), per region name ``X``::

        weight/X = sum_t m_t w_t [r_t = X] / sum_t m_t [r_t = X]      (0 when X has no token)
        tokens/X = sum_t m_t [r_t = X] / sum_t m_t                    (0 without tokens)
    """
    means = region_mean_entropy(weight_stats)
    shares = weight_stats[1] / weight_stats[1].sum().clamp_min(1.0)
    out: dict[str, float] = {}
    for region in Region:
        out[f"weight/{region.name}"] = float(means[region])
        out[f"tokens/{region.name}"] = float(shares[region])
    return out


# ---------------------------------------------------------------------------------------------------------
# Token weights
# ---------------------------------------------------------------------------------------------------------


def region_priors(progress: float, config: WeightConfig = WeightConfig()) -> Tensor:
    """Curriculum priors per region, ``[R]`` float32, at training progress ``nu = progress`` in [0, 1]::

        prior_format(nu)     = max(w_min, p_format - a_format * nu)
        prior_params(nu)     = min(w_max, p_params + a_params * nu)      PARAM_NAME and PARAM_VALUE
        prior_think(nu)      = min(w_max, p_think + a_think * nu)        THINK and RESPONSE
        prior_tool_name      = p_tool_name                               held high
        prior_other          = p_other
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    c = config
    think = min(c.w_max, c.p_think + c.a_think * progress)
    params = min(c.w_max, c.p_params + c.a_params * progress)
    priors = torch.empty(NUM_REGIONS, dtype=torch.float32)
    priors[Region.FORMAT] = max(c.w_min, c.p_format - c.a_format * progress)
    priors[Region.THINK] = think
    priors[Region.TOOL_NAME] = c.p_tool_name
    priors[Region.PARAM_NAME] = params
    priors[Region.PARAM_VALUE] = params
    priors[Region.RESPONSE] = think
    priors[Region.OTHER] = c.p_other
    return priors


def entropy_weights(
    regions: Tensor,
    mask: Tensor,
    region_stats: Tensor,
    progress: float,
    config: WeightConfig = WeightConfig(),
) -> Tensor:
    """The paper's entropy-informed token weights, ``[B, T]`` float32 (0 on invalid tokens).

    With ``H_r`` the mean entropy of region ``r`` from ``region_stats`` (:func:`region_entropy_stats`, already
    reduced over the step and the ranks) and ``nu = progress``::

        w_hat_r = prior_r(nu) / (1 - exp(-H_r) + delta)
        w_t     = clip(w_hat_{r(t)} / Z, w_min, w_max) * m_t

    ``Z`` is the mean of ``w_hat`` over valid tokens: per sequence (``normalize="sequence"``:
    ``Z_b = sum_t m_bt w_hat_bt / sum_t m_bt``) or per batch (``"batch"``: ``Z = sum_r n_r w_hat_r / sum_r n_r``
    with ``n_r = region_stats[1, r]``, so the whole optimizer step shares one ``Z`` however it is split into
    micro-batches). Every valid token gets a weight >= ``w_min > 0``, EOS and malformed text included; the mean
    is exactly 1 when the clip does not bind. A region without tokens in ``region_stats`` (possible only when
    the statistics come from other batches) is treated as ``H_r = 0``.
    """
    priors = region_priors(progress, config).to(region_stats.device, torch.float64)
    beta = 1.0 - torch.exp(-region_mean_entropy(region_stats))
    w_region = priors / (beta + config.delta)
    m = mask.to(torch.float64)
    w_hat = w_region[regions.long()] * m
    if config.normalize == "sequence":
        z = w_hat.sum(-1, keepdim=True) / m.sum(-1, keepdim=True).clamp_min(1.0)
    else:
        counts = region_stats[1]
        z = (counts * w_region).sum() / counts.sum().clamp_min(1.0)
    w = (w_hat / z.clamp_min(1e-12)).clamp(config.w_min, config.w_max) * m
    return w.to(torch.float32)


# The released code's constants (docs/method.md, "Static mode (the released code)").
_STATIC_FORMAT, _STATIC_TOOL_NAME = 1.0, 1.2
_STATIC_START, _STATIC_SLOPE, _STATIC_ARGS_MAX, _STATIC_THINK_MAX = 0.6, 0.002, 1.2, 1.0
_STATIC_CLIP = (0.001, 8.0)


def static_region_weights(step: int) -> Tensor:
    """The released code's raw weight per region at 1-based global step ``s``, ``[R]`` float32::

        FORMAT 1.0    TOOL_NAME 1.2    PARAM_NAME, PARAM_VALUE min(0.6 + 0.002 s, 1.2)
        THINK min(0.6 + 0.002 s, 1.0)    RESPONSE, OTHER 0
    """
    if step < 1:
        raise ValueError(f"step is 1-based, got {step}")
    ramp = _STATIC_START + _STATIC_SLOPE * step
    w = torch.zeros(NUM_REGIONS, dtype=torch.float32)
    w[Region.FORMAT] = _STATIC_FORMAT
    w[Region.TOOL_NAME] = _STATIC_TOOL_NAME
    w[Region.PARAM_NAME] = w[Region.PARAM_VALUE] = min(ramp, _STATIC_ARGS_MAX)
    w[Region.THINK] = min(ramp, _STATIC_THINK_MAX)
    return w


def static_weights(regions: Tensor, mask: Tensor, step: int) -> Tensor:
    """The released code's token weights (the ``static`` ablation), ``[B, T]`` float32.

    ``w_t = clip(c_{r(t)}(s), 0.001, 8) / mean_{t' valid, c > 0} clip(c_{r(t')}(s), 0.001, 8)`` on valid tokens
    whose region constant ``c`` (:func:`static_region_weights`) is positive, 0 elsewhere. It keeps the released
    code's zero weight for RESPONSE and OTHER (defect 4 of docs/method.md, "Defects of the released code") on
    purpose, for ablation; it runs on restlit's regions, so the span defects 1-3 there are not reproduced and
    EOS, tagged FORMAT, weighs like a tag.
    """
    raw = static_region_weights(step).to(mask.device)[regions.long()]
    positive = (raw > 0) & (mask > 0)
    w = torch.where(positive, raw.clamp(*_STATIC_CLIP), torch.zeros_like(raw))
    mean = w.sum(-1, keepdim=True) / positive.sum(-1, keepdim=True).clamp_min(1)
    return w / mean.clamp_min(1e-8)


def token_weights(
    regions: Tensor,
    mask: Tensor,
    config: WeightConfig = WeightConfig(),
    *,
    region_stats: Tensor | None = None,
    progress: float = 0.0,
    step: int = 1,
    entropy: Tensor | None = None,
    threshold: Tensor | float | None = None,
) -> Tensor:
    """Token weights ``[B, T]`` for ``config.mode``: ``uniform`` -> ``m_t``; ``static`` -> :func:`static_weights`
    at 1-based ``step``; ``entropy`` -> :func:`entropy_weights` at ``progress`` (needs ``region_stats``);
    ``top-entropy`` -> :func:`top_entropy_weights` (needs the token ``entropy``; ``threshold``: the whole
    batch's :func:`top_entropy_threshold`, default this call's own)."""
    if config.mode == "uniform":
        return mask.to(torch.float32)
    if config.mode == "static":
        return static_weights(regions, mask, step)
    if config.mode == "top-entropy":
        if entropy is None:
            raise ValueError("top-entropy weights need the token entropies")
        if threshold is None:
            threshold = top_entropy_threshold([entropy], [mask], config.top_entropy_quantile)
        return top_entropy_weights(entropy, mask, threshold)
    if region_stats is None:
        raise ValueError("entropy weights need region_stats (see region_entropy_stats)")
    return entropy_weights(regions, mask, region_stats, progress, config)


# ---------------------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------------------


def grpo_advantages(
    rewards: Tensor, group_ids: Tensor, scaling: AdvantageScaling = "group", eps: float = 1e-6
) -> Tensor:
    """GRPO advantages, one per completion, ``[N]``.

    ``A_i = (R_i - mean_g R) / (s + eps)`` where ``g`` is the group (prompt) of completion ``i`` and ``s`` is
    ``std_g R`` (``scaling="group"``, GRPO), ``std R`` over the whole batch (``"batch"``) or 1 without the eps
    (``"none"``, Dr. GRPO). Standard deviations are unbiased (Bessel), as in verl and TRL; a group of one has
    advantage 0. Broadcast the result over tokens with ``A[:, None]``.
    """
    if scaling not in ("group", "batch", "none"):
        raise ValueError(f"unknown advantage scaling {scaling!r}")
    r = rewards.to(torch.float64)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    count = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, inverse, torch.ones_like(r))
    mean = torch.zeros_like(count).index_add_(0, inverse, r) / count
    centred = r - mean[inverse]
    if scaling == "none":
        return centred.to(rewards.dtype)
    if scaling == "group":
        sq = torch.zeros_like(count).index_add_(0, inverse, centred**2)
        std = (sq / (count - 1).clamp_min(1.0)).sqrt()[inverse]
    else:
        std = r.std() if r.numel() > 1 else r.new_zeros(())
    return (centred / (std + eps)).to(rewards.dtype)


# ---------------------------------------------------------------------------------------------------------
# Policy loss
# ---------------------------------------------------------------------------------------------------------


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: KLEstimator = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi, with ``d = ref_logp - logp``::

        k1 = -d        k2 = d^2 / 2
        k3 = min(exp(c) - c - 1, 10),  c = clamp(d, -20, 20)   (Schulman's estimator, >= 0, 0 iff d = 0)

    k3 is clamped as verl's ``low_var_kl`` (log-ratio to [-20, 20], estimate to [-10, 10]; k3 is
    never negative): a token the policy has drifted far from the reference adds at most 10 and
    no gradient, where ``exp(d)`` would overflow to inf (``d`` > 709 in float64, > 88 in float32).
    """
    d = ref_logp - logp
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        c = d.clamp(-20.0, 20.0)
        # expm1 keeps k3 >= 0 and exact near d = 0, where exp(d) - 1 would cancel.
        return (torch.expm1(c) - c).clamp(max=10.0)
    raise ValueError(f"unknown KL estimator {estimator!r}")


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = 3.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token PPO-clip loss with dual clip, ``[B, T]``.

    ``r_t = exp(logp_t - old_logp_t)``, ``l_t = max(-A r_t, -A clip(r_t, 1 - eps_low, 1 + eps_high))``, and when
    ``A < 0``, ``l_t = min(l_t, -c A)`` with ``c = dual_clip``, so a huge ratio on a bad token cannot blow up
    the loss. ``advantages`` is ``[B]`` or ``[B, T]``.

    Returns:
        ``(loss, clipped, dual_clipped)``: the loss and boolean masks of where the clip, and the dual clip,
        took over from the unclipped term.
    """
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped_loss = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped_loss)
    clipped = clipped_loss > unclipped
    if dual_clip is None:
        return loss, clipped, torch.zeros_like(clipped)
    bound = -dual_clip * adv
    dual = (adv < 0) & (loss > bound)
    return torch.where(dual, bound.expand_as(loss), loss), clipped & ~dual, dual


def loss_denominator(
    mask: Tensor,
    weights: Tensor | None = None,
    aggregation: Aggregation = "token-mean-weighted",
    max_len: int | None = None,
) -> Tensor:
    """This micro-batch's share of the loss denominator, a float64 scalar; sum it over every micro-batch and
    rank of the optimizer step and pass the total to :func:`policy_loss` (that is what makes the gradient
    independent of how the step is split: defect 6 of docs/method.md, "Defects of the released code")::

        token-mean-weighted:  sum_{b,t} m_bt w_bt
        seq-mean-token-mean:  #{b : sum_t m_bt w_bt > 0}
        dr-grpo:              B * max_len            (max_len: generation budget; default T)
    """
    w = mask.to(torch.float64) if weights is None else mask.to(torch.float64) * weights.to(torch.float64)
    if aggregation == "token-mean-weighted":
        return w.sum()
    if aggregation == "seq-mean-token-mean":
        return (w.sum(-1) > 0).sum().to(torch.float64)
    if aggregation == "dr-grpo":
        return torch.tensor(float(mask.shape[0] * (max_len or mask.shape[-1])), dtype=torch.float64,
                            device=mask.device)
    raise ValueError(f"unknown aggregation {aggregation!r}")


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    weights: Tensor | None = None,
    aggregation: Aggregation = "token-mean-weighted",
    denominator: Tensor | float | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Reduce a per-token loss ``l`` to a scalar with weights ``w`` and mask ``m``::

        token-mean-weighted:  sum_{b,t} m w l / D
        seq-mean-token-mean:  sum_b (sum_t m w l / sum_t m w) / D
        dr-grpo:              sum_{b,t} m w l / D

    ``D`` is ``denominator`` (the step-wide total of :func:`loss_denominator`), or this call's own share when
    None, which is right only when the call covers the whole step. Under DDP/FSDP, which average gradients
    over ranks, multiply the result by the world size (or divide ``D`` by it).
    """
    w = mask if weights is None else mask * weights
    w = w.to(per_token.dtype)
    if denominator is None:
        denominator = loss_denominator(mask, weights, aggregation, max_len)
    denominator = torch.as_tensor(denominator, dtype=per_token.dtype, device=per_token.device).clamp_min(1e-8)
    if aggregation in ("token-mean-weighted", "dr-grpo"):
        return (w * per_token).sum() / denominator
    if aggregation == "seq-mean-token-mean":
        seq_w = w.sum(-1)
        seq = (w * per_token).sum(-1) / seq_w.clamp_min(1e-8)
        return torch.where(seq_w > 0, seq, torch.zeros_like(seq)).sum() / denominator
    raise ValueError(f"unknown aggregation {aggregation!r}")


def _masked_mean(x: Tensor, w: Tensor) -> Tensor:
    return (x * w).sum() / w.sum().clamp_min(1e-8)


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    weights: Tensor | None = None,
    *,
    config: LossConfig = LossConfig(),
    denominator: Tensor | float | None = None,
    ref_logp: Tensor | None = None,
    entropy: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The ResT (weighted GRPO/PPO) loss and its metrics.

    Per token ``l_t = ppo_clip(r_t, A) + kl_coef * kl(logp_t, ref_logp_t)`` (:func:`ppo_clip_loss`,
    :func:`kl_penalty`), reduced by :func:`aggregate` with the token weights ``w_t``. The default
    ``token-mean-weighted`` aggregation gives ``sum m w l / D`` with ``D = sum m w`` over the optimizer step, so
    in the unclipped region ``d loss / d logp_t = -w_t A_t r_t / D``; with ``weights=None`` (or ``uniform``) it
    is exactly GRPO's token-mean loss. The KL term is weighted like the policy term, so re-weighting a token
    moves its step size and its trust region together.

    On-policy (one update per rollout) pass ``old_logp = logp.detach()``.

    Returns:
        ``(loss, metrics)``; metrics are detached scalars over this call's valid tokens: ``clip_frac``,
        ``dual_clip_frac``, ``approx_kl`` (k3 estimate of KL(old || new)), ``ratio_max``, ``kl_ref`` (with
        ``ref_logp``), ``entropy`` and ``entropy_weighted`` (with ``entropy``), ``weight_min`` and ``weight_max``
        (per-region weights: :func:`region_weight_metrics`).
    """
    if weights is None:
        weights = mask
    pg, clipped, dual = ppo_clip_loss(logp, old_logp, advantages, config.eps_low, config.eps_high,
                                      config.dual_clip)
    per_token = pg
    kl = None
    if ref_logp is not None and config.kl_coef != 0.0:
        kl = kl_penalty(logp, ref_logp, config.kl_estimator)
        per_token = per_token + config.kl_coef * kl
    loss = aggregate(per_token, mask, weights, config.aggregation, denominator, config.max_len)

    with torch.no_grad():
        m = mask.to(torch.float32)
        w = weights.to(torch.float32) * m
        log_ratio = (logp - old_logp).float()
        metrics = {
            "clip_frac": _masked_mean(clipped.float(), m),
            "dual_clip_frac": _masked_mean(dual.float(), m),
            "approx_kl": _masked_mean(torch.expm1(-log_ratio) + log_ratio, m),
            "ratio_max": torch.where(m > 0, log_ratio, torch.full_like(log_ratio, -torch.inf)).max().exp(),
        }
        if ref_logp is not None:
            metrics["kl_ref"] = _masked_mean(kl_penalty(logp, ref_logp, config.kl_estimator).float(), m)
        if entropy is not None:
            metrics["entropy"] = _masked_mean(entropy.float(), m)
            metrics["entropy_weighted"] = _masked_mean(entropy.float(), w)
        valid = m > 0
        metrics["weight_min"] = torch.where(valid, w, torch.full_like(w, torch.inf)).min()
        metrics["weight_max"] = torch.where(valid, w, torch.full_like(w, -torch.inf)).max()
    return loss, metrics
