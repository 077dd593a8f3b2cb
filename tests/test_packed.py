"""``restlit.packed``: linear layers on oneDNN-packed weights give the plain layers' results, apply
only where they can, and leave the model as it was after the block."""

from __future__ import annotations

import pytest
import torch

from restlit.kernels.packed import bf16_packing_supported, packed_linears, packing_available
from restlit.rollout.base import SamplingConfig


def _linears(model) -> list[torch.nn.Linear]:
    return [m for m in model.modules() if type(m) is torch.nn.Linear]


def test_packed_block_matches_the_plain_layers_and_restores_them(tiny_parts):
    tok, model = tiny_parts
    ids = torch.tensor([tok("The weather in Paris is nice today, isn't it?")["input_ids"]])
    assert packing_available()  # this CPU build of torch has oneDNN: the tests below exercise the packed path
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with packed_linears(model, rows=4) as packed:
            assert packed == len(_linears(model)) > 0
            assert all(type(m.__dict__.get("forward")).__name__ == "_PackedForward" for m in _linears(model))
            inside = model(input_ids=ids).logits
            with packed_linears(model, rows=4) as nested:
                assert nested == 0  # already packed: nothing more
        after = model(input_ids=ids).logits
    assert not any("forward" in m.__dict__ for m in _linears(model))
    assert torch.equal(after, plain)
    torch.testing.assert_close(inside, plain, rtol=1e-5, atol=1e-5)


def test_packing_does_not_apply_with_gradients_and_is_undone_on_error(tiny_parts):
    _, model = tiny_parts
    with packed_linears(model, rows=1) as packed:  # gradients enabled: a training forward
        assert packed == 0 and not any("forward" in m.__dict__ for m in _linears(model))
    with torch.no_grad(), pytest.raises(ValueError, match="boom"), packed_linears(model, rows=1) as packed:
        assert packed > 0
        raise ValueError("boom")
    assert not any("forward" in m.__dict__ for m in _linears(model))


def test_packing_under_cpu_autocast_packs_bfloat16_copies(tiny_parts):
    """Under ``trainer.precision: bf16-mixed`` the rollout runs inside Lightning's CPU autocast, whose
    linear layers take bfloat16 inputs (a packed float32 layer refused them, so ``fit`` crashed):
    the block packs bfloat16 copies and gives autocast's results up to bfloat16 rounding; the
    float32 weights stay as they were. On a CPU that cannot pack bfloat16 (AVX2 only: oneDNN raised
    there, so ``fit`` crashed again) nothing is packed and autocast does the work."""
    tok, model = tiny_parts
    supported = bf16_packing_supported()
    ids = torch.tensor([tok("The weather in Paris is nice today, isn't it?")["input_ids"]])
    weights = [m.weight.detach().clone() for m in _linears(model)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain = model(input_ids=ids).logits
        with packed_linears(model, rows=1) as packed:
            if supported:
                assert packed == len(_linears(model)) > 0
                assert {m.forward.dtype for m in _linears(model)} == {torch.bfloat16}
            else:
                assert packed == 0 and not any("forward" in m.__dict__ for m in _linears(model))
            inside = model(input_ids=ids).logits
    assert inside.dtype == plain.dtype
    torch.testing.assert_close(inside.float(), plain.float(), rtol=1e-2, atol=1e-2)
    assert not any("forward" in m.__dict__ for m in _linears(model))
    assert all(torch.equal(m.weight, w) and m.weight.dtype == torch.float32 for m, w in zip(_linears(model), weights))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16), packed_linears(model, rows=1) as packed:
        assert packed == 0  # another autocast dtype: left to autocast


def test_no_bfloat16_packing_where_the_cpu_cannot(tiny_parts, monkeypatch):
    """Whatever this CPU is: where oneDNN cannot pack bfloat16, the block under bf16 autocast packs
    nothing (and float32 outside autocast still packs)."""
    from restlit.kernels import packed as packed_module

    _, model = tiny_parts
    monkeypatch.setattr(packed_module, "bf16_packing_supported", lambda: False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), packed_linears(model, rows=1) as packed:
        assert packed == 0
    with torch.no_grad(), packed_linears(model, rows=1) as packed:
        assert packed == len(_linears(model)) > 0


def test_packed_layers_refuse_a_gradient_forward(tiny_parts):
    _, model = tiny_parts
    layer = _linears(model)[0]
    with torch.no_grad(), packed_linears(model, rows=1), torch.enable_grad(), \
            pytest.raises(RuntimeError, match="without gradients"):
        layer(torch.randn(2, layer.in_features))


def test_engine_draws_the_same_samples_packed_and_plain(tiny_parts):
    """Issue 17: the same seeds give the same samples, log-probs within 1e-4, before and after."""
    from restlit.rollout.hf import HFEngine

    tok, model = tiny_parts
    prompts = [tok("hello there")["input_ids"], tok("The weather in Paris is nice today")["input_ids"]]
    sampling = SamplingConfig(n=3, max_new_tokens=16, seed=11)
    packed = HFEngine(model, tok, packed=True).generate(prompts, sampling)
    plain = HFEngine(model, tok, packed=False).generate(prompts, sampling)
    for a, b in zip((c for g in packed for c in g), (c for g in plain for c in g)):
        assert a.token_ids == b.token_ids
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=0, atol=1e-4)
        torch.testing.assert_close(torch.tensor(a.entropies), torch.tensor(b.entropies), rtol=0, atol=1e-4)
    assert not any("forward" in m.__dict__ for m in _linears(model))
