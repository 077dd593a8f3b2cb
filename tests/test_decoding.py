"""``restlit.decoding``: the written-out decoding step gives the model forward's logits on the
rollout engine's cascade cache, the engine draws the same samples with it and without it (issue
17), and it applies only where its arithmetic is the model's own."""

from __future__ import annotations

import pytest
import torch

from restlit import models
from restlit.kernels import sdpa
from restlit.kernels.attention import CASCADE
from restlit.kernels.decoding import FusedDecoder
from restlit.rollout.base import SamplingConfig
from restlit.rollout.hf import HFEngine

LLAMA = {"model_type": "llama", "hidden_size": 96, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 6, "num_key_value_heads": 2}
# qwen2: biases on the query, key and value projections (the fused matrix's bias)
QWEN2 = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 80, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2}


def _model(arch, tokenizer, seed=4):
    model = models.load_policy("unused", init="random", architecture=arch, tokenizer=tokenizer,
                               dtype="float32", seed=seed).eval()
    assert model.config._attn_implementation == sdpa.GROUPED_SDPA  # the cascade path
    with torch.no_grad():  # random biases, so that a dropped or misplaced bias shows
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0.0, 0.5)
    return model


def _prompts(tok):
    return [tok("hello there")["input_ids"], tok("The weather in Paris is nice today, isn't it")["input_ids"],
            tok("x")["input_ids"]]


@pytest.mark.parametrize("arch", [LLAMA, QWEN2], ids=["llama", "qwen2"])
def test_fused_step_gives_the_forwards_logits_on_the_cascade_cache(arch, smollm2_tokenizer) -> None:
    model = _model(arch, smollm2_tokenizer)
    if arch is QWEN2:
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    engine = HFEngine(model, smollm2_tokenizer)
    prompts, n, steps = _prompts(smollm2_tokenizer), 2, 6
    with torch.no_grad():
        decoder = FusedDecoder.build(model, rows=len(prompts) * n)
        assert decoder is not None
        runs = []
        for fused in (False, True):
            cache, logits, position = engine._prefill_cascade(prompts, n, steps, torch.device("cpu"))
            token, out = logits.argmax(-1), []
            for _ in range(steps):
                position = position + 1
                if fused:
                    step = decoder(token, position, cache)
                else:
                    step = model(input_ids=token[:, None], position_ids=position[:, None], past_key_values=cache,
                                 use_cache=True, **{CASCADE: cache}).logits[:, -1]
                out.append(step)
                token = step.argmax(-1)
            runs.append(torch.stack(out))
    assert runs[1].shape == (steps, len(prompts) * n, model.config.vocab_size)
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-5, atol=1e-5)


def test_engine_draws_the_same_samples_with_and_without_the_fused_step(smollm2_tokenizer, monkeypatch) -> None:
    """Issue 17: the same seeds give the same samples, log-probs within 1e-4; the fused engine
    really decodes with the decoder (the model's forward runs only for the prefills)."""
    model = _model(LLAMA, smollm2_tokenizer)
    prompts = _prompts(smollm2_tokenizer)
    sampling = SamplingConfig(n=3, max_new_tokens=10, temperature=1.0, seed=11)
    calls = {"decoder": 0, "forward": 0}
    step, forward = FusedDecoder.__call__, type(model).forward

    def counted_step(self, *args):
        calls["decoder"] += 1
        return step(self, *args)

    def counted_forward(self, *args, **kwargs):
        calls["forward"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(FusedDecoder, "__call__", counted_step)
    monkeypatch.setattr(type(model), "forward", counted_forward)
    fused = HFEngine(model, smollm2_tokenizer, prompt_batch_size=3).generate(prompts, sampling)
    assert calls["forward"] == len(prompts) and calls["decoder"] > 0
    calls.update(decoder=0, forward=0)
    plain = HFEngine(model, smollm2_tokenizer, prompt_batch_size=3, fused=False).generate(prompts, sampling)
    assert calls["decoder"] == 0 and calls["forward"] > len(prompts)
    fused, plain = [c for g in fused for c in g], [c for g in plain for c in g]
    assert [c.token_ids for c in fused] == [c.token_ids for c in plain]
    assert sum(len(c.token_ids) for c in fused) > len(fused)  # the runs decoded, not only sampled once
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), rtol=0, atol=1e-4)
        torch.testing.assert_close(torch.tensor(a.entropies), torch.tensor(b.entropies), rtol=0, atol=1e-4)


def test_decoder_applies_only_where_its_arithmetic_is_the_models(smollm2_tokenizer) -> None:
    model = _model(LLAMA, smollm2_tokenizer)
    assert FusedDecoder.build(model, rows=1) is None  # gradients enabled: a training forward
    with torch.no_grad():
        assert FusedDecoder.build(model, rows=1) is not None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert FusedDecoder.build(model, rows=1) is None  # autocast's dtypes are not the step's
        gelu = _model({**LLAMA, "hidden_act": "gelu"}, smollm2_tokenizer)
        assert FusedDecoder.build(gelu, rows=1) is None
        sliding = _model({**QWEN2, "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0},
                         smollm2_tokenizer)
        assert FusedDecoder.build(sliding, rows=1) is None
        gpt2 = models.load_policy("unused", init="random", tokenizer=smollm2_tokenizer, dtype="float32", seed=0,
                                  architecture={"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2})
        assert FusedDecoder.build(gpt2.eval(), rows=1) is None


def test_decoders_packed_weights_are_freed_before_the_engine_hands_memory_back(smollm2_tokenizer, monkeypatch) -> None:
    """``generate`` ends with ``memory.release`` (free heap pages back to the system): the decoder's
    packed copies (one copy of the linear weights) must be gone by then, or their heap pages stay
    resident through the update."""
    import weakref

    from restlit.kernels import memory

    model = _model(LLAMA, smollm2_tokenizer)
    built, alive_at_release = [], []
    init = FusedDecoder.__init__

    def tracked_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(weakref.ref(self))

    monkeypatch.setattr(FusedDecoder, "__init__", tracked_init)
    monkeypatch.setattr(memory, "release", lambda: alive_at_release.append(sum(r() is not None for r in built)))
    HFEngine(model, smollm2_tokenizer).generate(_prompts(smollm2_tokenizer), SamplingConfig(n=2, max_new_tokens=4, seed=1))
    assert len(built) == 1 and alive_at_release == [0]
