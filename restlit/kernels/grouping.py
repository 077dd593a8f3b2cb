"""The packed-group forward of the update: a prompt and its ``G`` completions in one sequence.

:func:`group_hidden` encodes the prompt once for all ``G`` completions (block attention: the
prompt is causal, each completion sees the prompt and itself only); :func:`packed_mask` is the
dense mask for attention implementations other than restlit's block-sparse one.
"""

from __future__ import annotations

from typing import Any

import torch

from restlit.kernels.attention import PACKED_GROUP, PackedGroup
from restlit.kernels.sdpa import GROUPED_SDPA

__all__ = ["group_hidden", "packed_mask"]


def group_hidden(model: Any, prompt: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Hidden states that predict each completion token, ``[G, C, H]``, with the prompt encoded once.

    The group is packed into one sequence ``prompt, completion_1, ..., completion_G`` (each
    completion without its last token, which predicts nothing) with a block attention mask: the
    prompt is causal, completion ``i`` sees the whole prompt and its own earlier tokens, never
    another completion; positions restart after the prompt for every completion. That is exactly
    ``G`` separate ``prompt + completion`` forwards, at the cost of one prompt, in a single plain
    forward (so gradient checkpointing and FSDP work as for any forward). Position ``j`` of the
    result is the state after ``prompt + tokens[:, :j]``: the prompt's last state for ``j = 0``.
    Right padding in ``tokens`` only ever precedes more padding, so it never reaches a real token.
    On restlit's attention (``restlit.kernels.sdpa.GROUPED_SDPA``, what ``restlit.models`` loads) the
    layout goes down the forward and only the allowed blocks are computed (:mod:`restlit.kernels.attention`,
    ``P^2/2 + G n (P + n)`` pairs instead of ``(P + G n)^2``); other attention implementations get
    the dense block mask.
    """
    base = model.get_decoder()
    g, c = tokens.shape
    p = prompt.shape[0]
    n = c - 1
    device = tokens.device
    seq = torch.cat([prompt, tokens[:, :n].reshape(-1)])
    positions = torch.cat([torch.arange(p, device=device), torch.arange(p, p + n, device=device).repeat(g)])
    if getattr(base.config, "_attn_implementation", None) == GROUPED_SDPA:
        # restlit's attention computes only the allowed blocks (restlit.kernels.attention), no dense mask
        hidden = base(input_ids=seq[None], position_ids=positions[None], use_cache=False,
                      **{PACKED_GROUP: PackedGroup(p, g, n)}).last_hidden_state[0]
    else:
        hidden = base(input_ids=seq[None], attention_mask=packed_mask(p, g, n, base, device),
                      position_ids=positions[None], use_cache=False).last_hidden_state[0]
    last = hidden[p - 1 : p].expand(g, 1, -1)
    return torch.cat([last, hidden[p:].view(g, n, -1)], dim=1)


def packed_mask(p: int, g: int, n: int, base: Any, device: Any) -> torch.Tensor:
    """The dense additive ``[1, 1, L, L]`` mask of a packed group, for attention implementations
    other than restlit's (eager, flash attention)."""
    allowed = torch.zeros(p + g * n, p + g * n, dtype=torch.bool, device=device)
    allowed[:p, :p] = torch.ones(p, p, dtype=torch.bool, device=device).tril()
    allowed[p:, :p] = True
    if n:
        allowed[p:, p:] = torch.block_diag(*[torch.ones(n, n, dtype=torch.bool, device=device).tril()] * g)
    dtype = next(base.parameters()).dtype
    additive = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return additive[None, None]
