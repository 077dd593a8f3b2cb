"""One decoding step of a Llama-family model written out as a loop over its layers, for the rollout
engine's cascade decoding on a CPU (:mod:`restlit.rollout.hf`).

A decoding step at 16 rows is small work spread over many calls: transformers' forward walks the
modules, their keyword plumbing and the attention dispatch, about 6,000 operator calls per step of
SmolLM2-135M, and multiplies by seven weight matrices per layer. Here the same arithmetic runs
directly, per layer ``l`` with ``h`` the residual stream of the ``R`` rows::

    x = rms_norm(h; w_in)                    [q k v] = x [W_q; W_k; W_v]^T + [b_q; b_k; b_v]
    q, k = rope(q, pos), rope(k, pos)       a = attention(q, cache_l + (k, v))
    h = h + a W_o^T
    x = rms_norm(h; w_post)                  [g u] = x [W_gate; W_up]^T
    h = h + (silu(g) * u) W_down^T
    logits = rms_norm(h; w_final) W_head^T

``rms_norm(x; w) = w * x / sqrt(mean(x^2) + eps)``, ``rope`` as the model's rotary embedding
computes it, ``attention`` the cascade (:func:`restlit.kernels.attention.cascade_decode_attention`: one copy
of each prompt's keys plus each row's own). The query, key and value projections are one matrix and
the gate and up projections another, so a layer makes four matrix products instead of seven, and
every matrix is packed once for oneDNN when the decoder is built (:mod:`restlit.packed`: a small
product otherwise repacks its weight at every call). The packed matrices are the only copy the
decoder holds: one copy of the linear weights, the tied LM head included, as
:func:`restlit.kernels.packed.packed_linears` holds; they are taken when the decoder is built, so it must not
outlive an optimizer step (the engine builds one per ``generate``).

It applies only where the arithmetic above is the model's own: ``model_type`` llama or qwen2 with
``hidden_act`` silu and full attention in every layer (no sliding window), every projection a
plain ``torch.nn.Linear`` (biases allowed) or a LoRA layer around one (packed on its merged weight,
:func:`restlit.kernels.packed.linear_parts`), no query/key norms; CPU float32 weights, no autocast, torch with oneDNN. :meth:`FusedDecoder.build`
returns None otherwise and the engine decodes through the model's forward. The logits equal the
forward's up to float32 summation order, and the engine draws the same samples either way (tested
in ``tests/test_decoding.py``). Its speed against the model's forward is ``bench_kernels``'s and
``bench_step``'s ``entropy+unfused`` rows in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from restlit.kernels.attention import cascade_decode_attention
from restlit.kernels.packed import linear_parts, packed_linear, packing_available

__all__ = ["SUPPORTED_MODEL_TYPES", "FusedDecoder"]

SUPPORTED_MODEL_TYPES = frozenset({"llama", "qwen2"})


def _pack(linears: list[torch.nn.Linear], rows: int):
    """The linear layers' weights stacked along the output axis (one product gives all their outputs
    side by side), packed for ``rows`` rows; their biases likewise (zeros for a layer without one,
    None when none has one)."""
    parts = [linear_parts(m) for m in linears]  # a LoRA layer: its merged weight
    weight = torch.cat([w for w, _ in parts])
    bias = None
    if any(b is not None for _, b in parts):
        bias = torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in parts])
    return packed_linear(weight, bias, rows)


def _supported(model: Any) -> bool:
    config = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    if (config is None or inner is None or getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES
            or getattr(config, "hidden_act", None) != "silu" or type(getattr(model, "lm_head", None)) is not torch.nn.Linear
            or any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ())
            or getattr(config, "use_sliding_window", False)
            or not all(hasattr(inner, name) for name in ("embed_tokens", "rotary_emb", "norm", "layers"))):
        return False
    for layer in inner.layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        projections = [getattr(attn, p, None) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
        projections += [getattr(mlp, p, None) for p in ("gate_proj", "up_proj", "down_proj")]
        if (any(linear_parts(p) is None for p in projections) or hasattr(attn, "q_norm")
                or not hasattr(layer, "input_layernorm") or not hasattr(layer, "post_attention_layernorm")):
            return False
    weight = model.lm_head.weight
    return weight.device.type == "cpu" and weight.dtype == torch.float32


class FusedDecoder:
    """The decoding step of the module docstring for ``model``, its matrices packed for ``rows``
    rows. Build it with :meth:`build`; call it with the step's tokens, positions and cascade cache."""

    def __init__(self, model: Any, rows: int):
        inner, config = model.model, model.config
        self.embedding = inner.embed_tokens.weight.detach()
        self.rotary = inner.rotary_emb
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append({
                "input_norm": (layer.input_layernorm.weight.detach(), layer.input_layernorm.variance_epsilon),
                "qkv": _pack([attn.q_proj, attn.k_proj, attn.v_proj], rows),
                "o": _pack([attn.o_proj], rows),
                "post_norm": (layer.post_attention_layernorm.weight.detach(),
                              layer.post_attention_layernorm.variance_epsilon),
                "gate_up": _pack([mlp.gate_proj, mlp.up_proj], rows),
                "down": _pack([mlp.down_proj], rows),
                "head_dim": attn.head_dim,
                "scaling": attn.scaling,
                "intermediate": mlp.gate_proj.out_features,
            })
        self.final_norm = (inner.norm.weight.detach(), inner.norm.variance_epsilon)
        self.head = _pack([model.lm_head], rows)

    @classmethod
    def build(cls, model: Any, rows: int) -> FusedDecoder | None:
        """The decoder, or None where it does not apply (module docstring): the caller then decodes
        through the model's forward."""
        if (torch.is_grad_enabled() or torch.is_autocast_enabled("cpu") or not packing_available()
                or not _supported(model)):
            return None
        return cls(model, rows)

    @staticmethod
    def _norm(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), norm[0], norm[1])

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, cache: Any) -> torch.Tensor:
        """Logits ``[R, vocab]`` (float32) for one new token per row: ``tokens`` and ``positions``
        ``[R]``; ``cache`` the rollout engine's cascade cache, whose layers take the new keys and
        values (``update``) and hold each prompt's keys once (``prompt_keys`` ...)."""
        rows = tokens.shape[0]
        h = F.embedding(tokens, self.embedding)
        cos, sin = self.rotary(h, positions[:, None])  # [R, 1, D]
        cos, sin = cos[:, None], sin[:, None]  # [R, 1, 1, D]: broadcast over heads
        for index, layer in enumerate(self.layers):
            dim, heads, kv = layer["head_dim"], self.heads, self.kv_heads
            qkv = layer["qkv"](self._norm(h, layer["input_norm"]))
            query = _rope(qkv[:, : heads * dim].view(rows, heads, 1, dim), cos, sin)
            key = _rope(qkv[:, heads * dim : (heads + kv) * dim].view(rows, kv, 1, dim), cos, sin)
            value = qkv[:, (heads + kv) * dim :].view(rows, kv, 1, dim)
            cached = cache.layers[index]
            keys, values = cached.update(key, value)
            attended = cascade_decode_attention(query, cached.prompt_keys, cached.prompt_values, cached.prompt_bias,
                                                keys, values, scaling=layer["scaling"])
            h = h + layer["o"](attended.reshape(rows, heads * dim))
            gate_up = layer["gate_up"](self._norm(h, layer["post_norm"]))
            middle = layer["intermediate"]
            h = h + layer["down"](F.silu(gate_up[:, :middle]) * gate_up[:, middle:])
        return self.head(self._norm(h, self.final_norm))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x cos + rotate_half(x) sin``, ``rotate_half([x1, x2]) = [-x2, x1]`` over the last axis."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin
