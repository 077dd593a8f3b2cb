"""Block-sparse attention for the packed prompt group of the update (see :func:`restlit.module.group_hidden`).

The update packs one prompt and its ``G`` completions into one sequence
``prompt (P tokens), completion_1 (n), ..., completion_G (n)``. The pairs that may attend are

- prompt -> prompt, causal;
- completion ``i`` -> the whole prompt and its own earlier tokens, never another completion.

A dense ``L x L`` mask (``L = P + G n``) computes all ``L^2`` pairs and throws most away; here the
two blocks are computed on their own:

    out_prompt  = softmax(q_p k_p^T * s + causal) v_p                            [P rows]
    out_i       = softmax(q_i [k_p; k_i]^T * s + [0 | causal]) [v_p; v_i]        [n rows each]

which is ``P^2 / 2 + G n (P + n)`` pairs instead of ``(P + G n)^2``, the same softmax over the
same keys for every row, so the result equals the dense-mask attention (tested in float64, values
and gradients). The completions' keys ``[k_p; k_i]`` are a ``G``-row batch that holds the prompt's
keys ``G`` times: ``G P`` key vectors per layer, small next to the ``L^2`` scores they replace.
Grouped-query heads are handled by ``enable_gqa`` (no copies of the key/value heads).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

# The keyword argument that carries the layout through the model's forward to every attention call.
PACKED_GROUP = "restlit_packed_group"


class PackedGroup(NamedTuple):
    """Layout of a packed group: ``prompt`` tokens, then ``completions`` blocks of ``length`` each."""

    prompt: int
    completions: int
    length: int


def packed_group_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, layout: PackedGroup,
                           scaling: float | None = None, dropout: float = 0.0) -> torch.Tensor:
    """Attention of a packed group (formulas in the module docstring), ``[1, L, heads, D]`` out.

    ``query`` is ``[1, heads, L, D]``, ``key`` / ``value`` ``[1, kv_heads, L, D]`` with
    ``L = prompt + completions * length``, as transformers' attention interface passes them.
    """
    p, g, n = layout
    batch, heads, total, dim = query.shape
    kv_heads = key.shape[1]
    if batch != 1 or total != p + g * n:
        raise ValueError(f"packed group layout {tuple(layout)} does not fit a query of shape {tuple(query.shape)}")
    gqa = heads != kv_heads
    out_prompt = F.scaled_dot_product_attention(query[:, :, :p], key[:, :, :p], value[:, :, :p], is_causal=True,
                                                dropout_p=dropout, scale=scaling, enable_gqa=gqa)
    if n == 0:
        return out_prompt.transpose(1, 2)
    # [1, h, G n, D] -> [G, h, n, D]: completion i is row i of a batch
    q_c = query[0, :, p:].reshape(heads, g, n, dim).transpose(0, 1)
    k_c = key[0, :, p:].reshape(kv_heads, g, n, dim).transpose(0, 1)
    v_c = value[0, :, p:].reshape(kv_heads, g, n, dim).transpose(0, 1)
    k_cat = torch.cat([key[:, :, :p].expand(g, -1, -1, -1), k_c], dim=2)
    v_cat = torch.cat([value[:, :, :p].expand(g, -1, -1, -1), v_c], dim=2)
    allowed = torch.ones(n, p + n, dtype=torch.bool, device=query.device)
    allowed[:, p:] = torch.ones(n, n, dtype=torch.bool, device=query.device).tril()
    out_c = F.scaled_dot_product_attention(q_c, k_cat, v_cat, attn_mask=allowed, dropout_p=dropout, scale=scaling,
                                           enable_gqa=gqa)
    out_c = out_c.transpose(0, 1).reshape(1, heads, g * n, dim)
    return torch.cat([out_prompt, out_c], dim=2).transpose(1, 2)


def packed_layout_from_kwargs(kwargs: dict[str, Any]) -> PackedGroup | None:
    """The layout passed down the forward by :func:`restlit.module.group_hidden`, if any."""
    layout = kwargs.get(PACKED_GROUP)
    return PackedGroup(*layout) if layout is not None else None
