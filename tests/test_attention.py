"""restlit.attention: the block-sparse packed-group attention equals dense-mask attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from restlit.attention import PackedGroup, packed_group_attention


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
