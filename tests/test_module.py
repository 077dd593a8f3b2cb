"""``restlit.module``: the prefix-shared group forward, gradient checkpointing, skipped steps, train
mode, gradients released after each step, and one step counter however many PPO epochs."""

from __future__ import annotations

import pytest
import torch

from restlit.config import load_config
from restlit.rewards import Reward, RewardBounds
from tests.training import (
    TINY,
    even_token_reward,
    fit_observing_policy,
    read_metrics,
    tiny_config,
)


def test_group_hidden_equals_separate_forwards(tiny_parts):
    from restlit.kernels.grouping import group_hidden
    from restlit.objective import logprobs_and_entropy_from_hidden

    tok, model = tiny_parts
    torch.manual_seed(0)
    prompt = torch.randint(0, len(tok), (9,))
    lengths = [5, 3, 1]
    tokens = torch.zeros(3, 5, dtype=torch.long)
    mask = torch.zeros(3, 5)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(0, len(tok), (n,))
        mask[i, :n] = 1
    with torch.no_grad():
        hidden = group_hidden(model, prompt, tokens)
        logp, _ = logprobs_and_entropy_from_hidden(hidden, model.get_output_embeddings().weight, tokens, mask=mask)
        for i, n in enumerate(lengths):
            full = torch.cat([prompt, tokens[i, :n]])[None]
            ref = torch.log_softmax(model(full).logits[0, len(prompt) - 1 : -1].double(), -1)
            ref = ref.gather(-1, tokens[i, :n, None]).squeeze(-1)
            assert torch.allclose(logp[i, :n].double(), ref, atol=1e-5)
            assert (logp[i, n:] == 0).all()

def _checkpointed_backward(mode):
    """The policy's parameter gradient of a group's log-likelihood under ``mode``, and the number of
    matrix products (``aten.mm``) that the backward ran."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from restlit.kernels.grouping import group_hidden
    from restlit.objective import logprobs_and_entropy_from_hidden
    from restlit.training.run import build_tokenizer_and_policy

    class CountMM(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            CountMM.calls += func is torch.ops.aten.mm.default
            return func(*args, **(kwargs or {}))

    cfg = load_config(TINY, ["model.gradient_checkpointing=false"])
    tok, model = build_tokenizer_and_policy(cfg, gradient_checkpointing=mode)
    model.train()
    torch.manual_seed(1)
    prompt, tokens = torch.randint(0, len(tok), (11,)), torch.randint(0, len(tok), (3, 6))
    hidden = group_hidden(model, prompt, tokens)
    logp, _ = logprobs_and_entropy_from_hidden(hidden, model.get_output_embeddings().weight, tokens)
    assert model.is_gradient_checkpointing == (mode is not False)
    with CountMM():
        logp.sum().backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()]), CountMM.calls


def test_gradient_checkpointing_gives_the_same_gradient():
    """Off, full and selective checkpointing give one gradient. Full reruns every layer's matrix
    products in the backward; selective keeps their outputs, so its backward runs exactly the
    products that the backward without checkpointing runs."""
    (off, mm_off), (full, mm_full), (selective, mm_selective) = (
        _checkpointed_backward(mode) for mode in (False, True, "selective"))
    assert torch.allclose(off, full, atol=1e-6) and torch.allclose(off, selective, atol=1e-6)
    assert mm_full > mm_off and mm_selective == mm_off


def test_degenerate_steps_are_skipped_with_a_reason(tmp_path):
    from restlit.training.run import fit

    constant = lambda comp, item, step: Reward(0.0, 1.0, 1.0, RewardBounds(0, 0, 0, 1))
    run_dir = fit(tiny_config(tmp_path, "trainer.max_steps=2"), reward_fn=constant)
    rows = read_metrics(run_dir)
    assert len(rows) == 2 and all(r["skipped/no_advantage"] == 1.0 for r in rows)

def test_policy_trains_in_train_mode(tmp_path, monkeypatch):
    """from_pretrained returns eval mode; the update must run in train mode, or gradient checkpointing
    silently does nothing."""
    modes = []
    fit_observing_policy(monkeypatch, tiny_config(tmp_path, "trainer.max_steps=1"),
                         lambda policy: modes.append(policy.training), prepare=lambda policy: policy.eval())
    assert modes and all(modes)

def test_gradients_are_released_before_the_next_rollout(tmp_path, monkeypatch):
    """After each optimizer step the gradients are freed (set to None), so the next rollout and the
    checkpoints do not carry a model-sized block of dead memory."""
    held = []
    run = fit_observing_policy(monkeypatch, tiny_config(tmp_path, "trainer.max_steps=3"),
                               lambda policy: held.append(sum(p.grad is not None for p in policy.parameters())))
    assert [int(r["skipped"]) for r in read_metrics(run)] == [0, 0, 0]  # steps 1 and 2 did update
    assert held and not any(held)


def test_ppo_epochs_do_not_speed_up_the_step_schedules(tmp_path):
    """With 2 PPO epochs per rollout, 4 training steps are 4 rollouts: the reward schedule sees
    steps 1..4, the curriculum reaches 1 and the linear LR schedule reaches 0."""
    from restlit.training.run import fit

    seen = []

    def reward(comp, item, step):
        seen.append(step)
        return even_token_reward(comp, item, step)

    cfg = tiny_config(tmp_path, "trainer.max_steps=4", "objective.ppo_epochs=2", "optim.schedule=linear",
                      "trainer.checkpoint_every=10")
    run_dir = fit(cfg, reward_fn=reward)
    rows = read_metrics(run_dir)
    assert sorted(set(seen)) == [1, 2, 3, 4]
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert all(r["skipped"] == 0.0 for r in rows)
    assert rows[-1]["curriculum/progress"] == pytest.approx(1.0)
    assert rows[-1]["train/lr"] == pytest.approx(0.0, abs=1e-12)
    assert [r["train/lr"] for r in rows] == pytest.approx([1e-3 * (1 - k / 4) for k in (1, 2, 3, 4)])
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4  # the one step counter, in the checkpoint


def _fit_counting_forwards(tmp_path, monkeypatch, *, strip_entropies: bool):
    """``fit`` on the tiny config for 2 steps, counting the policy's group forwards with and
    without gradient; ``strip_entropies`` makes the HF engine report no entropies (as vLLM)."""
    from restlit.rollout.hf import HFEngine
    from restlit.training.module import RestModule
    from restlit.training.run import fit

    counts = {"grad": 0, "no_grad": 0}
    original_logprobs, original_generate = RestModule.group_logprobs, HFEngine.generate

    def counting(self, model, group):
        if model is self.policy:
            counts["grad" if torch.is_grad_enabled() else "no_grad"] += 1
        return original_logprobs(self, model, group)

    def generate(self, prompts, sampling):
        groups = original_generate(self, prompts, sampling)
        for group in groups:
            for completion in group:
                completion.entropies = None if strip_entropies else completion.entropies
        return groups

    monkeypatch.setattr(RestModule, "group_logprobs", counting)
    monkeypatch.setattr(HFEngine, "generate", generate)
    run_dir = fit(tiny_config(tmp_path / ("stripped" if strip_entropies else "engine"), "trainer.max_steps=2"),
                  reward_fn=even_token_reward)
    monkeypatch.undo()  # the next call wraps the originals, not these wrappers
    return counts, read_metrics(run_dir)


def test_an_engine_without_entropies_costs_no_extra_forward(tmp_path, monkeypatch):
    """Issue 17, lever 3: when the engine reports no entropies (vLLM), the statistics come from the
    update's own forward: one policy forward per group, none without gradient; the curriculum's
    statistics and the update's metrics are those of the engine-entropy run."""
    with_engine, rows_engine = _fit_counting_forwards(tmp_path, monkeypatch, strip_entropies=False)
    without, rows = _fit_counting_forwards(tmp_path, monkeypatch, strip_entropies=True)
    assert [r["skipped"] for r in rows] == [0.0, 0.0]
    assert with_engine["grad"] > 0 and with_engine["no_grad"] == 0  # the update's forward, one per group
    assert without == with_engine
    for a, b in zip(rows_engine, rows):
        for key in ("curriculum/structured_entropy", "train/loss", "train/grad_norm", "reward/total"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-6), key
