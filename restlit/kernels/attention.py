"""Block-sparse attention for the packed prompt group of the update (see :func:`restlit.kernels.grouping.group_hidden`).

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
    """The layout passed down the forward by :func:`restlit.kernels.grouping.group_hidden`, if any."""
    layout = kwargs.get(PACKED_GROUP)
    return PackedGroup(*layout) if layout is not None else None


# The keyword argument that carries a cascade cache (restlit.rollout.hf) to the attention calls.
CASCADE = "restlit_cascade"

# The keyword argument that carries a cache of several single-row caches decoded together
# (restlit.kernels.kvcache.rows_cache, restlit.evaluation.session) to the attention calls: each row
# attends its own keys and values, at its own length.
ROWS = "restlit_rows"


def cascade_decode_attention(query: torch.Tensor, prompt_keys: torch.Tensor, prompt_values: torch.Tensor,
                             prompt_bias: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                             scaling: float | None = None) -> torch.Tensor:
    """One decoding step of ``B`` prompts x ``n`` completions against ONE copy of each prompt's
    keys and values plus each completion's own, combined by log-sum-exp; ``[B n, 1, heads, D]`` out.

    ``query`` is ``[B n, heads, 1, D]`` (rows grouped by prompt), ``prompt_keys`` / ``prompt_values``
    ``[B, kv, P, D]`` (right-padded, ``prompt_bias`` ``[B, 1, 1, P]`` is 0 on real positions and
    ``-inf`` on padding), ``keys`` / ``values`` ``[B n, kv, t, D]`` the completions' own positions.
    With ``s`` the scores of a row against the prompt and ``u`` against its own positions,

        m_a = max s,  l_a = sum exp(s - m_a),  o_a = sum exp(s - m_a) v      (and m_b, l_b, o_b for u)
        out = (o_a e^(m_a - m) + o_b e^(m_b - m)) / (l_a e^(m_a - m) + l_b e^(m_b - m)),  m = max(m_a, m_b)

    which is ``softmax([s, u]) [v_prompt; v_own]``, the attention over the concatenated cache.
    The ``n`` completions of a prompt and the ``heads / kv`` query heads sharing a key/value head
    are folded into the query axis of the prompt part, so each prompt's cache is read once per
    step instead of ``n`` times, and no copy of it exists. Scores are accumulated in float32.
    """
    rows, heads, _, dim = query.shape
    b, kv = prompt_keys.shape[:2]
    n, r = rows // b, heads // kv
    scale = scaling if scaling is not None else dim ** -0.5
    q = query.float() * scale
    # prompt part: [B, kv, n r, D] against [B, kv, P, D]
    qp = q.reshape(b, n, kv, r, dim).permute(0, 2, 1, 3, 4).reshape(b, kv, n * r, dim)
    s = qp @ prompt_keys.float().transpose(-1, -2) + prompt_bias
    m_a = s.amax(-1, keepdim=True)
    e = (s - m_a).exp()
    l_a = e.sum(-1, keepdim=True)
    o_a = e @ prompt_values.float()

    def rows_layout(x: torch.Tensor) -> torch.Tensor:  # [B, kv, n r, k] -> [B n, kv, r, k]
        return x.view(b, kv, n, r, x.shape[-1]).permute(0, 2, 1, 3, 4).reshape(rows, kv, r, x.shape[-1])

    m_a, l_a, o_a = rows_layout(m_a), rows_layout(l_a), rows_layout(o_a)
    # own part: [B n, kv, r, D] against [B n, kv, t, D]
    u = q.reshape(rows, kv, r, dim) @ keys.float().transpose(-1, -2)
    m_b = u.amax(-1, keepdim=True)
    e = (u - m_b).exp()
    l_b = e.sum(-1, keepdim=True)
    o_b = e @ values.float()
    m = torch.maximum(m_a, m_b)
    a, c = (m_a - m).exp(), (m_b - m).exp()
    out = (o_a * a + o_b * c) / (l_a * a + l_b * c)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).to(query.dtype)
