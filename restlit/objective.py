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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from restlit.regions import Region

NUM_REGIONS = len(Region)

WeightMode = Literal["uniform", "static", "entropy"]
Normalization = Literal["sequence", "batch"]
Aggregation = Literal["token-mean-weighted", "seq-mean-token-mean", "dr-grpo"]
AdvantageScaling = Literal["group", "batch", "none"]
KLEstimator = Literal["k1", "k2", "k3"]


# ---------------------------------------------------------------------------------------------------------
# Log-probs and entropy, chunked
# ---------------------------------------------------------------------------------------------------------


def _acc_dtype(x: Tensor) -> torch.dtype:
    """float32, or the input's dtype when wider (float64 inputs stay float64, for reference computations)."""
    return torch.promote_types(x.dtype, torch.float32)


def _chunk_forward(z: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """log p(token), entropy and logsumexp of one float32 (or wider) chunk of tempered logits ``z`` [C, V]."""
    lse = torch.logsumexp(z, dim=-1)
    logp = z.gather(1, tokens[:, None]).squeeze(1) - lse
    p = (z - lse[:, None]).exp_()
    # H = -sum p (z - lse) = lse - sum p z; a batched dot avoids a second [C, V] temporary.
    entropy = (lse - torch.bmm(p[:, None, :], z[:, :, None]).view(-1)).clamp_min_(0.0)
    return logp, entropy, lse


def _chunk_grad_(z: Tensor, lse: Tensor, tokens: Tensor, grad: Tensor, temperature: float) -> Tensor:
    """d logp / d (untempered logits) times ``grad``, in place in ``z``: ``g (onehot - softmax) / temperature``."""
    dz = z.sub_(lse[:, None]).exp_().mul_(-grad[:, None])
    dz.scatter_add_(1, tokens[:, None], grad[:, None])
    if temperature != 1.0:
        dz.div_(temperature)
    return dz


class _HiddenLogProb(torch.autograd.Function):
    """log-softmax of ``hidden @ weight.T / temperature`` at ``tokens``, one chunk of rows at a time.

    The backward recomputes each chunk's logits instead of saving them (one extra LM-head matmul): that is what
    keeps the peak at a couple of ``[chunk, V]`` float32 buffers in the backward as well as in the forward.
    """

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, tokens: Tensor, temperature: float, chunk_size: int):
        n = hidden.shape[0]
        logp = hidden.new_empty(n, dtype=_acc_dtype(hidden))
        entropy = torch.empty_like(logp)
        lse = torch.empty_like(logp)
        for s in range(0, n, chunk_size):
            z = F.linear(hidden[s : s + chunk_size], weight).to(logp.dtype)
            if temperature != 1.0:
                z.div_(temperature)
            logp[s : s + chunk_size], entropy[s : s + chunk_size], lse[s : s + chunk_size] = _chunk_forward(
                z, tokens[s : s + chunk_size]
            )
        ctx.save_for_backward(hidden, weight, tokens, lse)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: Tensor, _grad_entropy: Tensor):
        hidden, weight, tokens, lse = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        # float32 (or wider) accumulator: summing many chunk products in bf16 would lose the small ones.
        grad_w = torch.zeros(weight.shape, dtype=lse.dtype, device=weight.device) if need_w else None
        for s in range(0, hidden.shape[0], chunk_size):
            h = hidden[s : s + chunk_size]
            z = F.linear(h, weight).to(lse.dtype)
            if temperature != 1.0:
                z.div_(temperature)
            dz = _chunk_grad_(z, lse[s : s + chunk_size], tokens[s : s + chunk_size],
                              grad_logp[s : s + chunk_size].to(lse.dtype), temperature)
            if need_h:
                grad_h[s : s + chunk_size] = dz.to(weight.dtype) @ weight
            if need_w:
                grad_w.addmm_(dz.t(), h.to(lse.dtype))
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None


class _LogitsLogProb(torch.autograd.Function):
    """log-softmax of ``logits / temperature`` at ``tokens``, upcast to float32 one chunk of rows at a time."""

    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, temperature: float, chunk_size: int):
        n = logits.shape[0]
        logp = logits.new_empty(n, dtype=_acc_dtype(logits))
        entropy = torch.empty_like(logp)
        lse = torch.empty_like(logp)
        for s in range(0, n, chunk_size):
            # copy=True: the in-place ops below must never touch the caller's logits.
            z = logits[s : s + chunk_size].to(logp.dtype, copy=True)
            if temperature != 1.0:
                z.div_(temperature)
            logp[s : s + chunk_size], entropy[s : s + chunk_size], lse[s : s + chunk_size] = _chunk_forward(
                z, tokens[s : s + chunk_size]
            )
        ctx.save_for_backward(logits, tokens, lse)
        ctx.temperature, ctx.chunk_size = temperature, chunk_size
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp: Tensor, _grad_entropy: Tensor):
        logits, tokens, lse = ctx.saved_tensors
        temperature, chunk_size = ctx.temperature, ctx.chunk_size
        grad = torch.empty_like(logits)
        for s in range(0, logits.shape[0], chunk_size):
            z = logits[s : s + chunk_size].to(lse.dtype, copy=True)
            if temperature != 1.0:
                z.div_(temperature)
            grad[s : s + chunk_size] = _chunk_grad_(z, lse[s : s + chunk_size], tokens[s : s + chunk_size],
                                                    grad_logp[s : s + chunk_size].to(lse.dtype), temperature)
        return grad, None, None, None


def _check_temperature_chunk(temperature: float, chunk_size: int) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def logprobs_and_entropy_from_hidden(
    hidden: Tensor,
    lm_head_weight: Tensor,
    tokens: Tensor,
    *,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """Per-token log-prob of ``tokens`` (with gradient) and policy entropy (detached), from hidden states.

    With ``z = hidden @ W.T / temperature`` (upcast to float32 per chunk) (temperature as in sampling) and ``p = softmax(z)``::

        logp_t = z_t[y_t] - logsumexp(z_t)            H_t = -sum_v p_tv log p_tv = logsumexp(z_t) - sum_v p_tv z_tv

    ``hidden[..., i, :]`` must be the state that predicts ``tokens[..., i]`` (shift by one beforehand), and the
    LM head must be a plain bias-free linear layer (Llama, Qwen, SmolLM2, Mistral; not Gemma-2's softcapped
    head: use :func:`logprobs_and_entropy` on its logits). The head is applied to ``chunk_size`` positions at a
    time and the backward recomputes each chunk, so no ``[B, T, V]`` tensor exists in any dtype: the peak
    is about two ``[chunk_size, V]`` float32 buffers. Gradients flow to ``hidden`` and ``lm_head_weight``.
    The default 2048 rows was the fastest in ``benchmarks/bench_objective.py`` (faster than the naive
    ``log_softmax`` despite the recomputation, at 0.14x its peak for V = 49,152): smaller chunks re-read the
    ``[V, H]`` gradient accumulator more often; lower it for very large vocabularies.

    Args:
        hidden: ``[..., H]`` hidden states, any float dtype.
        lm_head_weight: ``[V, H]``.
        tokens: ``[...]`` sampled token ids.
        mask: optional ``[...]``; positions where it is 0 are skipped and return 0 for both outputs.

    Returns:
        ``(logp, entropy)``, float32 (float64 for float64 inputs), shaped like ``tokens``.
    """
    _check_temperature_chunk(temperature, chunk_size)
    shape = tokens.shape
    h = hidden.reshape(-1, hidden.shape[-1])
    y = tokens.reshape(-1)
    if mask is None:
        logp, entropy = _HiddenLogProb.apply(h, lm_head_weight, y, float(temperature), chunk_size)
        return logp.view(shape), entropy.view(shape)
    index = mask.reshape(-1).nonzero().squeeze(1)
    logp_v, entropy_v = _HiddenLogProb.apply(h[index], lm_head_weight, y[index], float(temperature), chunk_size)
    logp = logp_v.new_zeros(y.shape).index_put((index,), logp_v)
    entropy = entropy_v.new_zeros(y.shape).index_put((index,), entropy_v)
    return logp.view(shape), entropy.view(shape)


def logprobs_and_entropy(
    logits: Tensor, tokens: Tensor, *, temperature: float = 1.0, chunk_size: int = 2048
) -> tuple[Tensor, Tensor]:
    """Per-token log-prob of ``tokens`` (with gradient) and entropy (detached), from ready-made logits.

    Same formulas as :func:`logprobs_and_entropy_from_hidden` with ``z = logits / temperature``. The float32
    upcast happens one ``[chunk_size, V]`` chunk at a time in the forward and the backward, so next to the
    caller's own logits (and their gradient) only one chunk-sized float32 copy exists. Prefer the hidden-state
    variant when the LM head is a plain linear layer: it never materialises the logits at all.

    Args:
        logits: ``[..., V]``, any float dtype. ``tokens``: ``[...]``.

    Returns:
        ``(logp, entropy)``, float32 (float64 for float64 inputs), shaped like ``tokens``.
    """
    _check_temperature_chunk(temperature, chunk_size)
    shape = tokens.shape
    logp, entropy = _LogitsLogProb.apply(
        logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), float(temperature), chunk_size
    )
    return logp.view(shape), entropy.view(shape)


# ---------------------------------------------------------------------------------------------------------
# Region entropy statistics
# ---------------------------------------------------------------------------------------------------------


def region_entropy_stats(entropy: Tensor, regions: Tensor, mask: Tensor) -> Tensor:
    """Per-region entropy sums and token counts over valid tokens, as one ``[2, R]`` float64 tensor.

    ``stats[0, r] = sum_t m_t H_t [region_t = r]`` and ``stats[1, r] = sum_t m_t [region_t = r]``.
    Both rows are sums, so ``all_reduce(stats, SUM)`` across ranks (and adding across micro-batches) gives the
    global statistics; take means only afterwards with :func:`region_mean_entropy`.
    """
    m = mask.reshape(-1).to(torch.float64)
    r = regions.reshape(-1).long()
    stats = torch.zeros(2, NUM_REGIONS, dtype=torch.float64, device=entropy.device)
    stats[0].index_add_(0, r, entropy.detach().reshape(-1).to(torch.float64) * m)
    stats[1].index_add_(0, r, m)
    return stats


def region_mean_entropy(stats: Tensor) -> Tensor:
    """``H_r = stats[0, r] / stats[1, r]``, ``[R]``; 0 for regions without tokens (their weight is never used)."""
    return torch.where(stats[1] > 0, stats[0] / stats[1].clamp_min(1e-12), torch.zeros_like(stats[0]))


# ---------------------------------------------------------------------------------------------------------
# Token weights
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightConfig:
    """How tokens are weighted in the policy gradient.

    ``mode``:
        ``uniform``: every valid token weighs 1 (plain GRPO).
        ``static``: the released code's constants and step schedule (:func:`static_region_weights`).
        ``entropy``: the paper's entropy-informed weights (:func:`entropy_weights`).

    Entropy-mode defaults, and why (the paper gives no values):

    - ``delta = 0.2``: the weight of a region is ``prior / (1 - exp(-H) + delta)``, so ``delta`` caps the
      ratio between a deterministic region (H = 0) and a near-uniform one (H -> inf) at ``(1 + delta) / delta
      = 6`` for equal priors; 0.1 would allow 11x, which with typical think entropies (~1 nat) gives format
      tokens ~10x the weight of reasoning tokens before clipping.
    - ``w_min = 0.05, w_max = 5.0``: the post-normalisation clip. 5 keeps a handful of format tokens from
      dominating a long completion; 0.05 keeps every valid token in the gradient (defect 4 of
      docs/method.md, "Defects of the released code").
    - Priors and curriculum slopes (``nu`` in [0, 1] is training progress) reproduce the released code's
      schedule endpoints on a progress scale: parameters 0.6 -> 1.2 (``a_params = 0.6``), think 0.6 -> 1.0
      (``a_think = 0.4``), tool name held at 1.2; format decays 1.0 -> 0.5 (``a_format = 0.5``), the paper's
      shift of weight from structure to reasoning. RESPONSE follows the think prior (free text the policy
      writes for the user); OTHER (JSON punctuation, keys, stray text) gets a constant 0.6, the free-text
      starting prior, so that only its entropy, not its prior, decides how much it is up-weighted.
    - ``normalize = "sequence"``: mean weight 1 over each sequence's valid tokens, as the released code does.
    """

    mode: WeightMode = "entropy"
    delta: float = 0.2
    w_min: float = 0.05
    w_max: float = 5.0
    normalize: Normalization = "sequence"
    p_format: float = 1.0
    a_format: float = 0.5
    p_tool_name: float = 1.2
    p_params: float = 0.6
    a_params: float = 0.6
    p_think: float = 0.6
    a_think: float = 0.4
    p_other: float = 0.6

    def __post_init__(self) -> None:
        if self.mode not in ("uniform", "static", "entropy"):
            raise ValueError(f"unknown weight mode {self.mode!r}")
        if self.normalize not in ("sequence", "batch"):
            raise ValueError(f"normalize must be 'sequence' or 'batch', got {self.normalize!r}")
        if self.delta <= 0:
            raise ValueError(f"delta must be > 0, got {self.delta}")
        if not 0 < self.w_min <= self.w_max:
            raise ValueError(f"need 0 < w_min <= w_max, got {self.w_min}, {self.w_max}")
        for name in ("p_format", "p_tool_name", "p_params", "p_think", "p_other"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 so that every valid token keeps a positive weight")


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
) -> Tensor:
    """Token weights ``[B, T]`` for ``config.mode``: ``uniform`` -> ``m_t``; ``static`` -> :func:`static_weights`
    at 1-based ``step``; ``entropy`` -> :func:`entropy_weights` at ``progress`` (needs ``region_stats``)."""
    if config.mode == "uniform":
        return mask.to(torch.float32)
    if config.mode == "static":
        return static_weights(regions, mask, step)
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


@dataclass(frozen=True)
class LossConfig:
    """PPO-clip policy loss with optional KL to a reference policy.

    Defaults follow the released ResT run (verl's): ``eps_low = eps_high = 0.2``, dual clip ``c = 3``, no KL.
    Set ``eps_high = 0.28`` for DAPO's clip-higher, ``dual_clip = None`` to disable the dual clip,
    ``kl_coef = 0.003`` for the paper's KL variant. ``max_len`` is the generation budget used by ``dr-grpo``
    (defaults to the padded length of each call, which differs between micro-batches: set it).
    """

    eps_low: float = 0.2
    eps_high: float = 0.2
    dual_clip: float | None = 3.0
    kl_coef: float = 0.0
    kl_estimator: KLEstimator = "k3"
    aggregation: Aggregation = "token-mean-weighted"
    max_len: int | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.eps_low < 1 and self.eps_high >= 0):
            raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1, got {self.dual_clip}")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"unknown KL estimator {self.kl_estimator!r}")
        if self.aggregation not in ("token-mean-weighted", "seq-mean-token-mean", "dr-grpo"):
            raise ValueError(f"unknown aggregation {self.aggregation!r}")


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: KLEstimator = "k3") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi, with ``d = ref_logp - logp``::

        k1 = -d        k2 = d^2 / 2        k3 = exp(d) - d - 1  (>= 0, 0 iff d = 0; Schulman's estimator)
    """
    d = ref_logp - logp
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        # expm1 keeps k3 >= 0 and exact near d = 0, where exp(d) - 1 would cancel.
        return torch.expm1(d) - d
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
    regions: Tensor | None = None,
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
        ``ref_logp``), ``entropy`` and ``entropy_weighted`` (with ``entropy``), ``weight_min``, ``weight_max``
        and, with ``regions``, ``weight_mean/<REGION>`` and ``token_frac/<REGION>`` (0 for absent regions).
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
        if regions is not None:
            # Every region is reported (0 when absent) so that no metric needs a host sync to decide.
            r = regions.reshape(-1).long()
            count = torch.zeros(NUM_REGIONS, device=m.device).index_add_(0, r, m.reshape(-1))
            total = torch.zeros(NUM_REGIONS, device=m.device).index_add_(0, r, w.reshape(-1))
            mean = total / count.clamp_min(1.0)
            frac = count / count.sum().clamp_min(1.0)
            for region in Region:
                metrics[f"weight_mean/{region.name}"] = mean[region]
                metrics[f"token_frac/{region.name}"] = frac[region]
    return loss, metrics
