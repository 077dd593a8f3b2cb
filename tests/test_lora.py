"""LoRA adapters (``model.lora``, :mod:`restlit.adapters`): config, reference, frozen base weights,
optimizer state, rollouts on the current adapters, outputs, resume and DDP."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from restlit.config import ConfigError, load_config
from tests.conftest import REPO, free_port

TINY = REPO / "configs" / "tiny-test.yaml"


def test_lora_is_off_by_default_and_set_turns_it_on():
    assert load_config(TINY).model.lora is None
    lora = load_config(TINY, ["model.lora.r=16"]).model.lora
    assert (lora.r, lora.alpha, lora.target_modules, lora.modules_to_save) == (16, 32.0, ["all-linear"], [])


@pytest.mark.parametrize("name", ["qwen3-4b-lora-1gpu.yaml", "qwen3-4b-lora-fsdp.yaml"])
def test_lora_recipes_load(name):
    config = load_config(REPO / "configs" / name)
    assert config.model.lora.r == 16 and config.model.lora.target_modules == ["all-linear"]
    assert (config.trainer.devices, config.rollout.engine) == ((1, "vllm") if "1gpu" in name else (8, "hf"))


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


# ---------------------------------------------------------------- fit, outputs, resume, DDP

FIT = ["model.lora.r=4", "objective.loss.kl_coef=0.05", "optim.lr=0.05", "trainer.checkpoint_every=2",
       "objective.curriculum.total_steps=4", "logging.tensorboard=false"]


def lora_fit(out: Path, *overrides: str, resume: bool = False, capture: dict | None = None,
             monkeypatch=None) -> Path:
    from restlit.training import run
    from tests.training import even_token_reward

    config = load_config(TINY, [f"output_dir={out}", f"data.cache_dir={out.parent / 'cache'}", *FIT, *overrides])
    if capture is not None:
        original = run.build_tokenizer_and_policy

        def keep(cfg, *args):
            tok, policy = original(cfg, *args)
            capture["policy"] = policy
            return tok, policy

        monkeypatch.setattr(run, "build_tokenizer_and_policy", keep)
    return run.fit(config, resume=resume, reward_fn=even_token_reward)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A 4-step LoRA fit with a KL term; the policy object it trained."""
    mp = pytest.MonkeyPatch()
    captured: dict = {}
    try:
        out = lora_fit(tmp_path_factory.mktemp("lora") / "straight", "trainer.max_steps=4", capture=captured,
                       monkeypatch=mp)
    finally:
        mp.undo()
    return out, captured["policy"]


@pytest.mark.slow
def test_lora_fit_trains_the_adapters_only(straight):
    """After the fit the base weights are bit-identical to a freshly loaded base model, the
    adapters moved, the optimizer holds state for the adapters only, the KL to the base grew while
    the engine's log-probs stayed the trainer's (the rollouts saw the updated adapters)."""
    from tests.training import read_metrics

    run_dir, policy = straight
    _, _, base = tiny_policy(lora=False)
    base_state = base.state_dict()
    for name, value in policy.state_dict().items():
        if ".lora_" not in name:
            plain = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            assert torch.equal(value, base_state[plain]), name
    assert all(float(p.detach().abs().max()) > 0 for n, p in policy.named_parameters() if "lora_B" in n)

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    assert len(ckpt["state_dict"]) == len(trainable)  # the adapters only: the base is model.path's
    state = ckpt["optimizer_states"][0]["state"]
    assert len(state) == len(trainable) == 28
    assert sorted(tuple(s["exp_avg"].shape) for s in state.values()) == sorted(tuple(p.shape) for p in trainable)

    rows = read_metrics(run_dir)
    assert [r["skipped"] for r in rows] == [0.0] * 4
    assert rows[0]["train/kl_ref"] == 0.0 and rows[-1]["train/kl_ref"] > 1e-2
    assert all(r["rollout/logp_abs_diff"] < 1e-4 for r in rows)


@pytest.mark.slow
def test_lora_outputs_load_as_adapter_and_as_merged_model(straight):
    """final/ is a peft adapter (PeftModel.from_pretrained on the base), final/merged a full model
    with the tokenizer, and restlit takes final/ wherever a model path goes: all the same logits."""
    import peft
    from transformers import AutoModelForCausalLM

    from restlit.models import load_policy, load_tokenizer

    run_dir, policy = straight
    final = run_dir / "final"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in final.iterdir()}
    assert (final / "merged" / "config.json").is_file() and (final / "merged" / "tokenizer.json").is_file()
    _, _, base = tiny_policy(lora=False)
    ids = torch.tensor([[1, 5, 9, 200, 7, 3000]])
    with torch.no_grad():
        trained = policy.eval()(ids).logits
        adapter = peft.PeftModel.from_pretrained(base, final).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(final / "merged").eval()(ids).logits
        loaded = load_policy(str(final)).eval()(ids).logits
    assert torch.allclose(adapter, trained, atol=1e-5)
    assert torch.allclose(merged, trained, atol=1e-5) and torch.equal(loaded, merged)
    assert load_tokenizer(str(final)).encode("hello") == load_tokenizer("smollm2-135m").encode("hello")


@pytest.mark.slow
def test_lora_resume_is_exact(straight, tmp_path):
    """2 steps, then --resume to 4: the adapters (and so their optimizer state) equal the straight run's."""
    from safetensors.torch import load_file

    from tests.training import read_metrics

    run_dir, _ = straight
    lora_fit(tmp_path / "b", "trainer.max_steps=2")
    resumed = lora_fit(tmp_path / "b", "trainer.max_steps=4", resume=True)
    a, b = (load_file(d / "final" / "adapter_model.safetensors") for d in (run_dir, resumed))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    for key in ("train/loss", "train/grad_norm", "train/kl_ref"):
        assert read_metrics(resumed)[-1][key] == pytest.approx(read_metrics(run_dir)[-1][key], rel=1e-5, abs=1e-7)


@pytest.mark.slow
def test_lora_trains_under_ddp(tmp_path):
    """Two gloo ranks, one prompt each: the adapters train and the base weights do not move."""
    script = tmp_path / "fit_script.py"
    script.write_text(textwrap.dedent("""
        import sys
        from restlit.config import load_config
        from restlit.training.run import fit
        from tests.training import TINY, even_token_reward

        fit(load_config(TINY, sys.argv[1:]), reward_fn=even_token_reward)
    """))
    out = tmp_path / "ddp"
    cmd = [sys.executable, str(script), f"output_dir={out}", f"data.cache_dir={tmp_path / 'cache'}", *FIT,
           "trainer.max_steps=2", "trainer.prompts_per_step=1", "trainer.devices=2", "trainer.strategy=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    lora_b = [v for k, v in ckpt["state_dict"].items() if "lora_B" in k]
    assert len(ckpt["state_dict"]) == 28 and len(lora_b) == 14 and all(float(v.abs().max()) > 0 for v in lora_b)
    assert len(ckpt["optimizer_states"][0]["state"]) == 28
    # the base did not move: the adapter applied to a freshly loaded base gives final/merged
    import peft
    from safetensors.torch import load_file

    _, _, base = tiny_policy(lora=False)
    expected = peft.PeftModel.from_pretrained(base, out / "final").merge_and_unload().state_dict()
    merged = load_file(out / "final" / "merged" / "model.safetensors")
    assert merged.keys() <= expected.keys() and all(torch.equal(merged[k], expected[k]) for k in merged)


@pytest.mark.slow
def test_lora_fit_with_vllm_syncs_the_merged_weights(tmp_path):
    """The vLLM engine gets the merged weights after every step: its sampling log-probs stay the
    trainer's while the adapters carry the policy away from the base."""
    from tests.test_rollout import HEADS, need_vllm
    from tests.training import read_metrics

    need_vllm()
    run_dir = lora_fit(tmp_path / "vllm", *HEADS, "rollout.engine=vllm", "rollout.kv_cache_gb=0.05",
                       "rollout.enforce_eager=true", "trainer.max_steps=2")
    rows = read_metrics(run_dir)
    assert [r["skipped"] for r in rows] == [0.0] * 2 and rows[-1]["train/kl_ref"] > 1e-2
    assert all(r["rollout/logp_abs_diff"] < 1e-3 for r in rows)


@pytest.mark.slow
def test_sft_then_fit_puts_new_adapters_on_the_merged_sft_model(tmp_path):
    """``sft`` with LoRA writes an adapter and its merged model; a ``fit`` from that adapter directory
    starts new adapters on the merged SFT model: its policy starts as the SFT model, which is also
    its KL reference (adapters disabled), and its adapter names the merged model as its base."""
    import json

    from restlit.adapters import disabled
    from restlit.models import load_policy
    from restlit.training import run
    from tests.training import even_token_reward

    sft_cfg = load_config(TINY, [f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}",
                                 "model.lora.r=4", "sft.max_steps=2", "sft.batch_size=2", "sft.lr=0.05",
                                 "sft.max_seq_tokens=4096", "logging.tensorboard=false"])
    sft_final = run.sft(sft_cfg) / "final"
    assert (sft_final / "adapter_config.json").is_file() and (sft_final / "merged" / "config.json").is_file()
    fit_cfg = load_config(TINY, [f"output_dir={tmp_path / 'fit'}", f"data.cache_dir={tmp_path / 'cache'}", *FIT,
                                 f"model.path={sft_final}", "model.init=pretrained", "trainer.max_steps=1"])
    _, policy = run.build_tokenizer_and_policy(fit_cfg)
    sft_model = load_policy(str(sft_final / "merged")).eval()
    _, _, base = tiny_policy(lora=False)
    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():
        start = policy.eval()(ids).logits
        assert torch.equal(start, sft_model(ids).logits)
        assert not torch.allclose(start, base(ids).logits, atol=1e-3)  # the SFT adapters were merged in
        with disabled(policy):
            assert torch.equal(policy(ids).logits, start)
    out = run.fit(fit_cfg, reward_fn=even_token_reward)
    config = json.loads((out / "final" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((sft_final / "merged").resolve())


@pytest.mark.slow
def test_diagnose_variance_measures_the_adapters(tmp_path):
    """``diagnose variance`` with LoRA: the gradients are the adapters' (fresh: only B has one)."""
    import math

    from restlit.experiments.variance import measure_variance
    from tests.training import even_token_reward

    config = load_config(TINY, [f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}",
                                "model.lora.r=4"])
    report = measure_variance(config, batches=2, sketch_dim=0, n_boot=10, reward_fn=even_token_reward,
                              log=lambda m: None)
    w = report["weightings"]["uniform"]
    assert math.isfinite(w["relative_variance"]) and w["mean_gradient_norm"] > 0
    with pytest.raises(Exception, match="no trainable parameter name contains"):
        measure_variance(config, batches=2, params=["embed_tokens"], reward_fn=even_token_reward, log=lambda m: None)


@pytest.mark.slow
def test_fsdp2_shards_the_base_trains_the_adapters_and_gathers_merged_weights(tmp_path):
    """FSDP2 (``fully_shard``, 2 CPU processes, gloo) on a LoRA policy: the adapters train, the
    base does not move, and the merged weights gathered for vLLM from the shards equal peft's merge
    of the same weights on one process."""
    script = tmp_path / "fsdp_lora.py"
    script.write_text(textwrap.dedent("""
        import copy, os, sys, torch, torch.distributed as dist
        from torch.distributed.fsdp import fully_shard
        from restlit.adapters import lora_layers, merged_state_dict
        from restlit.training.distributed import full_state_dict
        from tests.test_lora import tiny_policy

        class Wrap(torch.nn.Module):
            def __init__(self, policy):
                super().__init__()
                self.policy = policy

        def main(rank):
            dist.init_process_group("gloo", rank=rank, world_size=2)
            _, _, policy = tiny_policy()
            base = {k: v.clone() for k, v in policy.state_dict().items() if ".lora_" not in k}
            adapters = {k: v.clone() for k, v in policy.state_dict().items() if ".lora_" in k}
            for layer in policy.get_base_model().model.layers:
                fully_shard(layer)
            fully_shard(policy.train())
            root = Wrap(policy)  # as Lightning holds it: the policy under the module's "policy."
            opt = torch.optim.AdamW([p for p in root.parameters() if p.requires_grad], lr=0.05)
            ids = torch.tensor([[1, 5, 9, 200, 7, 3000 + rank]])
            root.policy(ids).logits.float().pow(2).mean().backward()
            opt.step()
            state = full_state_dict(policy, root, prefix="policy.")
            assert all(torch.equal(state[k], v) for k, v in base.items())
            merged = merged_state_dict(state, lora_layers(policy))
            if rank == 0:
                _, _, plain = tiny_policy()
                plain.load_state_dict(state)
                expected = plain.merge_and_unload().state_dict()
                assert merged.keys() == expected.keys()
                assert all(torch.equal(merged[k], expected[k]) for k in expected)
                assert all(not torch.equal(state[k], v) for k, v in adapters.items())  # every adapter trained
            dist.barrier()
            dist.destroy_process_group()
            sys.stdout.write(f"ok {rank}\\n"); sys.stdout.flush()
            os._exit(0)  # see tests/test_distributed.py: gloo/FSDP threads can abort the teardown

        if __name__ == "__main__":
            os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
            torch.multiprocessing.spawn(main, nprocs=2)
    """))
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, str(script), str(port)], check=False, capture_output=True, text=True,
                         cwd=REPO, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ok 0" in out.stdout and "ok 1" in out.stdout
