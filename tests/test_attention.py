"""restlit.kernels.attention: the block-sparse packed-group attention equals dense-mask attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restlit.kernels import sdpa
from restlit.kernels.attention import PackedGroup, packed_group_attention


def _dense(query, key, value, layout: PackedGroup, scaling: float) -> torch.Tensor:
    """The reference: every pair of the packed sequence, masked to the allowed ones, heads repeated."""
    p, g, n = layout
    total = p + g * n
    allowed = torch.zeros(total, total, dtype=torch.bool)
    allowed[:p, :p] = torch.ones(p, p, dtype=torch.bool).tril()
    allowed[p:, :p] = True
    for i in range(g):
        s = p + i * n
        allowed[s:s + n, s:s + n] = torch.ones(n, n, dtype=torch.bool).tril()
    r = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(r, 1), value.repeat_interleave(r, 1)
    scores = (query @ k.transpose(-1, -2)) * scaling
    scores = scores.masked_fill(~allowed, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


@pytest.mark.parametrize(("heads", "kv_heads", "layout"), [
    (6, 2, PackedGroup(7, 3, 5)),
    (4, 4, PackedGroup(5, 2, 4)),
    (6, 3, PackedGroup(4, 4, 1)),
    (3, 1, PackedGroup(6, 2, 0)),
])
def test_equals_dense_mask_values_and_gradients(heads, kv_heads, layout) -> None:
    gen = torch.Generator().manual_seed(0)
    total = layout.prompt + layout.completions * layout.length
    q = torch.randn(1, heads, total, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    k = torch.randn(1, kv_heads, total, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    v = torch.randn(1, kv_heads, total, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    weight = torch.randn(1, total, heads, 8, dtype=torch.float64, generator=gen)
    results = []
    for fn in (_dense, packed_group_attention):
        out = fn(q, k, v, layout, scaling=0.3)
        (out * weight).sum().backward()
        results.append((out.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone()))
        q.grad = k.grad = v.grad = None
    assert results[0][0].shape == (1, total, heads, 8)
    for a, b in zip(*results, strict=True):
        assert torch.allclose(a, b, atol=1e-12)


def test_completions_never_see_each_other() -> None:
    """Changing completion 1's keys and values leaves completion 0's and the prompt's outputs alone."""
    layout = PackedGroup(3, 2, 4)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 11, 4, dtype=torch.float64, generator=gen) for _ in range(3))
    base = packed_group_attention(q, k, v, layout)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 7:] += 1.0
    v2[:, :, 7:] -= 2.0
    moved = packed_group_attention(q, k2, v2, layout)
    assert torch.equal(base[:, :7], moved[:, :7])
    assert not torch.allclose(base[:, 7:], moved[:, 7:])
    assert torch.allclose(F.scaled_dot_product_attention(q[:, :, :3], k[:, :, :3], v[:, :, :3], is_causal=True),
                          base[:, :3].transpose(1, 2))


def test_layout_must_fit() -> None:
    q = torch.zeros(1, 2, 10, 4)
    with pytest.raises(ValueError, match="does not fit"):
        packed_group_attention(q, q, q, PackedGroup(3, 2, 4))


@pytest.mark.parametrize(("heads", "kv_heads", "n"), [(6, 2, 3), (4, 4, 1), (6, 3, 2)])
def test_cascade_decode_equals_attention_over_the_concatenated_cache(heads, kv_heads, n) -> None:
    """One copy of each prompt's cache (right-padded, different lengths) + each row's own keys,
    combined by log-sum-exp == softmax over ``[prompt; own]`` with the prompt repeated per row."""
    from restlit.kernels.attention import cascade_decode_attention

    gen = torch.Generator().manual_seed(2)
    lengths, t, dim = [5, 3], 4, 8
    b, width = len(lengths), max(lengths)
    pk = torch.randn(b, kv_heads, width, dim, dtype=torch.float64, generator=gen)
    pv = torch.randn(b, kv_heads, width, dim, dtype=torch.float64, generator=gen)
    bias = torch.zeros(b, 1, 1, width, dtype=torch.float32)
    for i, length in enumerate(lengths):
        bias[i, ..., length:] = float("-inf")
        pk[i, :, length:] = 1e3  # padding must never count
    own_k = torch.randn(b * n, kv_heads, t, dim, dtype=torch.float64, generator=gen)
    own_v = torch.randn(b * n, kv_heads, t, dim, dtype=torch.float64, generator=gen)
    q = torch.randn(b * n, heads, 1, dim, dtype=torch.float64, generator=gen)
    out = cascade_decode_attention(q, pk, pv, bias, own_k, own_v, scaling=0.4)
    assert out.shape == (b * n, 1, heads, dim)
    r = heads // kv_heads
    for row in range(b * n):
        i = row // n
        keys = torch.cat([pk[i, :, :lengths[i]], own_k[row]], 1).repeat_interleave(r, 0)
        values = torch.cat([pv[i, :, :lengths[i]], own_v[row]], 1).repeat_interleave(r, 0)
        ref = ((q[row] @ keys.transpose(-1, -2)) * 0.4).softmax(-1) @ values  # [heads, 1, D]
        assert torch.allclose(out[row, 0], ref[:, 0].to(out.dtype), atol=1e-6)


def test_engine_cascade_samples_what_the_padded_cache_samples(smollm2_tokenizer) -> None:
    """Same seeds, same samples: the cascade path (restlit's attention) and the left-padded,
    repeated cache (transformers' sdpa) draw the same tokens, log-probs within 1e-4."""
    from restlit import models
    from restlit.rollout.base import SamplingConfig
    from restlit.rollout.hf import HFEngine

    arch = {"model_type": "llama", "hidden_size": 96, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 6, "num_key_value_heads": 2}
    model = models.load_policy("unused", init="random", architecture=arch, tokenizer=smollm2_tokenizer,
                               dtype="float32", seed=4).eval()
    tok = smollm2_tokenizer
    prompts = [tok("hello there")["input_ids"], tok("The weather in Paris is nice today, isn't it")["input_ids"],
               tok("x")["input_ids"]]
    sampling = SamplingConfig(n=3, max_new_tokens=10, temperature=1.0, seed=11)
    engine = HFEngine(model, tok, prompt_batch_size=3)
    runs = []
    for impl in (sdpa.GROUPED_SDPA, "sdpa"):
        model.set_attn_implementation(impl)
        runs.append(engine.generate(prompts, sampling))
    cascade, padded = ([c for g in run for c in g] for run in runs)
    assert [c.token_ids for c in cascade] == [c.token_ids for c in padded]
    for a, b in zip(cascade, padded, strict=True):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
        assert torch.allclose(torch.tensor(a.entropies), torch.tensor(b.entropies), atol=1e-4)
