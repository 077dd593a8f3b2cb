"""LoRA adapters (``model.lora``, :mod:`restlit.adapters`): config, reference, frozen base weights,
optimizer state, rollouts on the current adapters, outputs, resume and DDP."""

from __future__ import annotations

import pytest
import torch

from restlit.config import ConfigError, load_config
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny-test.yaml"


def test_lora_is_off_by_default_and_set_turns_it_on():
    assert load_config(TINY).model.lora is None
    lora = load_config(TINY, ["model.lora.r=16"]).model.lora
    assert (lora.r, lora.alpha, lora.target_modules, lora.modules_to_save) == (16, 32.0, ["all-linear"], [])


@pytest.mark.parametrize(("override", "message"), [
    ("model.lora.r=0", "model.lora: r must be >= 1, got 0"),
    ("model.lora.dropout=1.5", "model.lora: dropout must be in [0, 1)"),
    ("model.lora.alpha=-1", "model.lora: alpha must be > 0"),
    ("model.lora.target_modules=[]", "model.lora: target_modules must be a non-empty list"),
    ("model.lora.target_modules=q_proj", "model.lora.target_modules: expected a list"),
    ("model.lora.rank=3", "model.lora.rank: unknown key; allowed: r, alpha"),
])
def test_bad_lora_values_fail_in_one_line(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(TINY, [override])
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


# ---------------------------------------------------------------- the model


def tiny_policy(*overrides: str, lora: bool = True, adapters_seed: int | None = 1):
    """The tiny config's tokenizer and policy; with ``lora`` wrapped with r=4 adapters whose ``B``
    is drawn from ``adapters_seed`` (fresh adapters start at B = 0, i.e. equal to the base)."""
    from restlit.training.run import build_tokenizer_and_policy

    config = load_config(TINY, [*(["model.lora.r=4"] if lora else []), *overrides])
    tokenizer, policy = build_tokenizer_and_policy(config)
    if lora and adapters_seed is not None:
        gen = torch.Generator().manual_seed(adapters_seed)
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return config, tokenizer, policy.eval()


def test_only_adapters_are_trainable_and_the_base_is_the_plain_model():
    from restlit import adapters

    _, _, policy = tiny_policy(adapters_seed=None)
    _, _, base = tiny_policy(lora=False)
    assert adapters.is_adapted(policy) and not adapters.is_adapted(base)
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # every linear layer of attention and MLP (2 layers x 7), not the LM head
    assert len(adapters.lora_layers(policy)) == 14 and not any("lm_head" in n for n in adapters.lora_layers(policy))
    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():  # fresh adapters (B = 0): the policy is the base model
        assert torch.equal(policy(ids).logits, base(ids).logits)


def test_a_target_that_matches_nothing_fails_in_one_line():
    from restlit.adapters import AdapterError

    with pytest.raises(AdapterError) as info:
        tiny_policy("model.lora.target_modules=[q_proj, qkv_proj]")
    assert str(info.value).startswith("model.lora.target_modules: 'qkv_proj' matches no linear layer of this model")
    assert "q_proj" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(AdapterError, match="modules_to_save: 'head' matches no module"):
        tiny_policy("model.lora.modules_to_save=[head]")


def make_group(tokenizer, policy):
    """One prompt with two sampled completions, as the update sees them."""
    from restlit.rollout.base import SamplingConfig
    from restlit.rollout.hf import HFEngine
    from restlit.training.module import Group

    prompt = tokenizer("The weather in Paris is", add_special_tokens=False)["input_ids"]
    comps = HFEngine(policy, tokenizer).generate([prompt], SamplingConfig(n=2, max_new_tokens=10, seed=5))[0]
    width = max(len(c.token_ids) for c in comps)
    tokens = torch.zeros((2, width), dtype=torch.long)
    mask = torch.zeros((2, width))
    for i, c in enumerate(comps):
        tokens[i, : len(c.token_ids)] = torch.tensor(c.token_ids)
        mask[i, : len(c.token_ids)] = 1.0
    group = Group(prompt=torch.tensor(prompt), tokens=tokens, mask=mask, regions=torch.zeros_like(tokens),
                  advantages=torch.tensor([1.0, -1.0]), entropy=None)
    return group, comps


def test_kl_reference_is_the_policy_with_adapters_disabled_equal_to_the_base_model():
    """The reference log-probs (adapters disabled, no copy) equal those of a separately loaded base
    model, so the KL term is the same; the policy's own differ (its adapters are not zero)."""
    from restlit.objective import policy_loss
    from restlit.training.module import RestModule

    config, tokenizer, policy = tiny_policy("objective.loss.kl_coef=0.1")
    _, _, base = tiny_policy(lora=False)
    module = RestModule(config, policy, tokenizer)
    assert module.reference is None
    group, _ = make_group(tokenizer, policy)
    with torch.no_grad():
        ref = module.reference_logprobs(group)
        base_logp = module.group_logprobs(base, group)[0]
        own = module.group_logprobs(policy, group)[0]
    assert torch.equal(ref, base_logp)
    assert ((own - ref).abs() * group.mask).sum() / group.mask.sum() > 0.05
    kls = []
    for reference in (ref, base_logp):
        _, metrics = policy_loss(own, own, group.advantages, group.mask, torch.ones_like(group.mask),
                                 config=config.objective.loss, ref_logp=reference)
        kls.append(float(metrics["kl_ref"]))
    assert kls[0] == kls[1] > 0


def test_the_engine_decodes_on_the_current_adapters():
    """The packed and fused decoding paths multiply by the merged weights: they draw the samples
    that the plain forward through the LoRA layers draws, with the trainer's log-probs; with the
    adapters disabled the samples change."""
    from restlit.adapters import disabled
    from restlit.kernels.decoding import FusedDecoder
    from restlit.rollout.base import SamplingConfig
    from restlit.rollout.hf import HFEngine
    from restlit.training.module import RestModule

    config, tokenizer, policy = tiny_policy()
    with torch.no_grad():
        assert FusedDecoder.build(policy.get_base_model(), 4) is not None
    group, fused = make_group(tokenizer, policy)
    prompt = group.prompt.tolist()
    sampling = SamplingConfig(n=2, max_new_tokens=10, seed=5)
    plain = HFEngine(policy, tokenizer, packed=False, fused=False).generate([prompt], sampling)[0]
    assert [c.token_ids for c in fused] == [c.token_ids for c in plain]
    with torch.no_grad():
        trainer_logp = RestModule(config, policy, tokenizer).group_logprobs(policy, group)[0]
    for i, c in enumerate(fused):
        assert torch.allclose(torch.tensor(c.logprobs), trainer_logp[i, : len(c.token_ids)], atol=1e-4)
    with disabled(policy):
        base = HFEngine(policy, tokenizer).generate([prompt], sampling)[0]
    assert [c.token_ids for c in base] != [c.token_ids for c in fused]


def test_merged_state_dict_is_peft_merge():
    """The merged weights sent to vLLM and written to final/merged equal peft's own merge, without
    touching the policy's base weights."""
    import copy

    from restlit.adapters import lora_layers, merged_state_dict

    _, _, policy = tiny_policy("model.lora.target_modules=[q_proj, down_proj]", "model.lora.alpha=8")
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    merged = merged_state_dict(policy.state_dict(), lora_layers(policy))
    expected = copy.deepcopy(policy).merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    assert all(torch.equal(merged[k], expected[k]) for k in expected)
    assert any(not torch.equal(merged[k], before[f"base_model.model.{k.replace('q_proj.', 'q_proj.base_layer.')}"])
               for k in merged if "q_proj.weight" in k)
    assert all(torch.equal(v, before[k]) for k, v in policy.state_dict().items())
