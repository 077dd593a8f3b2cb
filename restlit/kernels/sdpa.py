"""restlit's attention entry point for transformers models: ``sdpa`` with grouped-query heads
folded instead of repeated, and the dispatch to the block-sparse packed-group and cascade paths
of :mod:`restlit.kernels.attention` when the caller passes their layout down the forward.

:func:`use_grouped_attention` switches a model loaded on ``sdpa`` to it (what
:func:`restlit.models.load_policy` does); :data:`GROUPED_SDPA` is its registered name.
"""

from __future__ import annotations

from typing import Any

import torch

from restlit.kernels.attention import (
    CASCADE,
    PACKED_GROUP,
    ROWS,
    cascade_decode_attention,
    packed_group_attention,
    packed_layout_from_kwargs,
)

__all__ = ["GROUPED_SDPA", "grouped_sdpa_forward", "use_grouped_attention"]

GROUPED_SDPA = "restlit_grouped_sdpa"


def grouped_sdpa_forward(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                         dropout: float = 0.0, scaling: float | None = None, is_causal: bool | None = None,
                         **kwargs: Any) -> tuple[Any, None]:
    """Scaled dot-product attention for a grouped-query-attention (GQA) decoding step without
    copying the keys and values once per query head.

    transformers' ``sdpa`` path repeats each key/value head ``r = heads / kv_heads`` times whenever
    a mask is given (left-padded rollouts): at every decoding step and every layer that copies the
    whole cache ``r`` times, which on a CPU cost as much as the attention itself. Here the ``r``
    query heads that share a key/value head are folded into the query-length axis instead: query
    ``[B, kv, r, D]`` (head ``h`` reads key/value head ``h // r``, as in ``repeat_kv``) against the
    keys and values as they are, the mask ``[B, 1, 1, K]`` (if any) broadcast to the ``r`` rows, so
    ``softmax(q k^T * scaling + mask) v`` is computed for exactly the same pairs. Without a mask
    the fold still pays: ``r`` query rows per key head read the cache faster than one row per head
    under ``enable_gqa`` (``bench_kernels --decode-attention`` in ``benchmarks/RESULTS.md``). Longer queries
    (prefill, the packed update, SFT) take transformers' own ``sdpa``: there the copy is small
    next to the attention, and folding was not faster. The packed prompt group of the update
    (:func:`restlit.kernels.grouping.group_hidden`) passes its layout and takes the block-sparse path of
    :mod:`restlit.kernels.attention` instead of a dense mask; the rollout engine's decoding steps pass
    their cascade cache (one copy of each prompt's keys, :mod:`restlit.rollout.hf`); multi-turn
    evaluation's steps pass their rows cache (several conversations decoded together, each row
    against its own cache, :func:`restlit.kernels.kvcache.rows_cache`)."""
    layout = packed_layout_from_kwargs(kwargs)
    if layout is not None:
        kwargs.pop(PACKED_GROUP)
        return packed_group_attention(query, key, value, layout, scaling=scaling, dropout=dropout).contiguous(), None
    cascade = kwargs.pop(CASCADE, None)
    if cascade is not None:
        layer = cascade.layers[module.layer_idx]
        return cascade_decode_attention(query, layer.prompt_keys, layer.prompt_values, layer.prompt_bias, key, value,
                                        scaling=scaling).contiguous(), None
    rows = kwargs.pop(ROWS, None)
    if rows is not None:  # several single-row caches decoded together: each row on its own cache
        layers = rows.layers[module.layer_idx].rows
        return torch.cat([_folded_sdpa(module, query[b : b + 1], layer.keys, layer.values, None, dropout, scaling,
                                       is_causal, kwargs) for b, layer in enumerate(layers)]), None
    return _folded_sdpa(module, query, key, value, attention_mask, dropout, scaling, is_causal, kwargs), None


def _folded_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float,
                 scaling: float | None, is_causal: bool | None, kwargs: dict[str, Any]) -> Any:
    """:func:`grouped_sdpa_forward`'s plain path, ``[B, q_len, heads, D]``: a one-position query
    of a grouped model with its heads folded, anything else through transformers' ``sdpa``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    groups = heads // key.shape[1]
    if q_len > 1 or groups == 1 or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)[0]
    folded = query.reshape(batch, key.shape[1], groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(folded, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling)
    return out.reshape(batch, heads, q_len, dim).transpose(1, 2).contiguous()


def use_grouped_attention(model: Any) -> Any:
    """Switch a model on transformers' ``sdpa`` to :func:`grouped_sdpa_forward` (registered once);
    other implementations (eager, flash attention) are left as chosen."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return model
    if GROUPED_SDPA not in AttentionInterface._global_mapping:
        AttentionInterface.register(GROUPED_SDPA, grouped_sdpa_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(GROUPED_SDPA, sdpa_mask)
    model.set_attn_implementation(GROUPED_SDPA)
    return model
