"""Token log-probs and entropies straight from the LM head, chunked over positions.

``[N, V]`` logits of a long completion batch do not fit in memory next to the model, so
:func:`logprobs_and_entropy_from_hidden` computes ``log p(token)`` and the entropy
``H = logsumexp(z) - sum_v softmax(z)_v z_v`` (tempered logits ``z = h W^T / temperature``) one chunk
of positions at a time, in float32 (or float64 for float64 inputs), and its backward recomputes each
chunk's logits instead of storing them: ``d logp / d z = (onehot - softmax(z)) / temperature``.
:func:`logprobs_and_entropy` does the same from materialised logits. The entropy carries no
gradient. :mod:`restlit.objective` re-exports both; the loss math lives there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["logprobs_and_entropy", "logprobs_and_entropy_from_hidden"]


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
