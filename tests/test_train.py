"""Training: config, rollout engine, prefix-shared forward, fit / resume / sft / DDP on the tiny config."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from restlit.config import ConfigError, load_config
from restlit.rewards import Reward, RewardBounds
from restlit.rollout.base import SamplingConfig
from tests.conftest import REPO

TINY = REPO / "configs" / "tiny-test.yaml"


def tiny_config(tmp_path: Path, *overrides: str):
    return load_config(TINY, [f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}", *overrides])


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    by_step: dict[int, dict[str, float]] = {}
    for row in rows:  # Lightning may write one step's keys on several rows
        by_step.setdefault(int(row["step"]), {}).update(row)
    return [by_step[k] for k in sorted(by_step)]


def even_token_reward(completion, item, step) -> Reward:
    """Toy reward: the share of sampled tokens with an even id (easy to raise, varies per sample)."""
    ids = completion.token_ids
    share = sum(1 for t in ids if t % 2 == 0) / max(len(ids), 1)
    return Reward(0.0, share, share, RewardBounds(0.0, 0.0, 0.0, 1.0))


@pytest.fixture(scope="module")
def tiny_parts():
    cfg = load_config(TINY)
    from restlit.train import build_tokenizer_and_policy

    tokenizer, policy = build_tokenizer_and_policy(cfg)
    return tokenizer, policy.eval()


# ---------------------------------------------------------------- config


def test_shipped_configs_validate():
    for name in ("tiny-test.yaml", "quickstart-cpu.yaml", "qwen3-4b-fsdp.yaml"):
        cfg = load_config(REPO / "configs" / name)
        assert cfg.rollout.n >= 1 and cfg.trainer.max_steps >= 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("objective.weights.mode=entropi", "objective.weights.mode: 'entropi' is not allowed; choose one of: uniform, static, entropy"),
        ("optim.lrr=1", "optim.lrr: unknown key; allowed: lr,"),
        ("rollout.n=many", "rollout.n: expected an integer, got 'many'"),
        ("objective.weights.delta=-1", "objective.weights: delta must be > 0"),
        ("optim", "expected KEY=VALUE"),
    ],
)
def test_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(TINY, [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_overrides_and_roundtrip(tmp_path):
    from restlit.config import save_config

    cfg = load_config(TINY, ["optim.lr=2e-6", "rollout.stop=['</tool_call>']", "trainer.devices=auto"])
    assert cfg.optim.lr == 2e-6 and cfg.rollout.stop == ["</tool_call>"] and cfg.trainer.devices == "auto"
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_cli_fit_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: fast}\n")
    out = subprocess.run([sys.executable, "-m", "cli.main", "fit", "--config", str(bad)], capture_output=True,
                         text=True, cwd=REPO, check=False)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: optim.lr: expected a number, got 'fast'"


# ---------------------------------------------------------------- rollout engine and offsets


def test_engine_greedy_matches_generate_and_reports_logprobs(tiny_parts):
    from restlit.rollout.hf import HFEngine

    tok, model = tiny_parts
    prompts = [tok("hello there, how are you")["input_ids"], tok("a")["input_ids"]]
    groups = HFEngine(model, tok, prompt_batch_size=2).generate(prompts, SamplingConfig(n=2, max_new_tokens=10, temperature=0))
    for prompt, group in zip(prompts, groups):
        ref = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=10, pad_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
        for comp in group:
            assert comp.token_ids == ref[: len(comp.token_ids)] and len(comp.token_ids) == 10
            assert comp.finish_reason == "length"
        for comp in group:  # every row of the expanded cache, against a full forward without cache
            full = torch.tensor([prompt + comp.token_ids])
            with torch.no_grad():
                lp = torch.log_softmax(model(full).logits[0, len(prompt) - 1 : -1].float(), -1)
            lp = lp.gather(-1, torch.tensor(comp.token_ids)[:, None]).squeeze(-1)
            assert torch.allclose(lp, torch.tensor(comp.logprobs), atol=2e-5)


def test_engine_seeding_is_per_prompt_and_respects_n_and_stop(tiny_parts):
    from restlit.rollout.hf import HFEngine

    tok, model = tiny_parts
    engine = HFEngine(model, tok)
    prompts = [tok("hello there")["input_ids"], tok("The weather in Paris is nice today")["input_ids"]]
    both = engine.generate(prompts, SamplingConfig(n=3, max_new_tokens=12, seed=5))
    again = engine.generate(prompts, SamplingConfig(n=3, max_new_tokens=12, seed=5))
    alone = engine.generate(prompts[1:], SamplingConfig(n=3, max_new_tokens=12, seed=6))
    assert [len(g) for g in both] == [3, 3]
    assert [c.token_ids for g in both for c in g] == [c.token_ids for g in again for c in g]
    assert [c.token_ids for c in both[1]] == [c.token_ids for c in alone[0]]  # batch-independent
    assert len({tuple(c.token_ids) for c in both[0]}) > 1
    other = engine.generate(prompts, SamplingConfig(n=3, max_new_tokens=12, seed=99))
    assert [c.token_ids for g in other for c in g] != [c.token_ids for g in both for c in g]
    stopped = engine.generate(prompts, SamplingConfig(n=4, max_new_tokens=40, seed=3, stop=["e"]))
    for comp in (c for g in stopped for c in g):
        assert ("e" in comp.text and comp.finish_reason == "stop") or (comp.finish_reason == "length" and "e" not in comp.text)
        assert len(comp.token_ids) <= 40 and len(comp.entropies) == len(comp.token_ids)


def test_completion_offsets_partition_the_decoded_text(smollm2_tokenizer):
    from restlit.regions import Region, token_regions
    from restlit.tokens import completion_offsets

    tok = smollm2_tokenizer
    text = '<think> héllo 日本語 </think>\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n</tool_call>'
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    decoded, offsets = completion_offsets(tok, ids)
    assert decoded == text and len(offsets) == len(ids)
    assert offsets[-1][0] == offsets[-1][1]  # EOS: empty offsets
    assert all(a <= b <= len(text) for a, b in offsets)
    assert all(offsets[i][1] <= offsets[i + 1][1] for i in range(len(offsets) - 1))
    regions = token_regions(decoded, offsets)
    assert regions[-1] is Region.FORMAT
    name_at = text.index('"f"')
    assert any(r is Region.TOOL_NAME and a <= name_at + 1 < b for (a, b), r in zip(offsets, regions))
    # no token of the multi-byte characters in the reasoning is mistaken for FORMAT
    think_end = text.index("</think>")
    assert all(r is Region.THINK for (a, b), r in zip(offsets, regions) if 7 <= a and b <= think_end)


# ---------------------------------------------------------------- the prefix-shared forward


def test_group_hidden_equals_separate_forwards(tiny_parts):
    from restlit.module import group_hidden
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


# ---------------------------------------------------------------- fit, resume, sft


def test_tiny_fit_runs_and_logs_finite_metrics(tmp_path):
    from restlit.models import load_policy
    from restlit.train import fit

    cfg = tiny_config(tmp_path, "trainer.max_steps=3", "trainer.val_every=2", "data.val_limit=2")
    run_dir = fit(cfg, reward_fn=even_token_reward)
    rows = read_metrics(run_dir)
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert any(math.isfinite(r.get("val/total", math.nan)) for r in rows)  # greedy held-out scoring
    for row in rows:
        assert row["skipped"] == 0.0
        for key in ("train/loss", "train/grad_norm", "train/lr", "reward/total", "weight/THINK", "weight/OTHER",
                    "entropy/OTHER", "curriculum/progress", "time/rollout", "time/update", "train/clip_frac"):
            assert math.isfinite(row[key]), key
        assert row["train/weight_min"] > 0  # entropy mode: every valid token keeps a weight
    assert rows[-1]["curriculum/progress"] == pytest.approx(1.0)
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    reloaded = load_policy(str(run_dir / "final"))
    assert reloaded.config.num_hidden_layers == 2


def test_degenerate_steps_are_skipped_with_a_reason(tmp_path):
    from restlit.train import fit

    constant = lambda comp, item, step: Reward(0.0, 1.0, 1.0, RewardBounds(0, 0, 0, 1))
    run_dir = fit(tiny_config(tmp_path, "trainer.max_steps=2"), reward_fn=constant)
    rows = read_metrics(run_dir)
    assert len(rows) == 2 and all(r["skipped/no_advantage"] == 1.0 for r in rows)


@pytest.mark.slow
def test_mean_reward_rises_when_the_update_works(tmp_path):
    """On the toy reward the tiny model learns within a few dozen steps; with lr 0 it does not."""
    from restlit.train import fit

    def reward_curve(lr: str, name: str) -> list[float]:
        cfg = load_config(TINY, [f"output_dir={tmp_path / name}", f"data.cache_dir={tmp_path / 'cache'}",
                                 "trainer.max_steps=30", f"optim.lr={lr}", "rollout.n=8",
                                 "rollout.max_new_tokens=8", "trainer.checkpoint_every=100"])
        return [r["reward/total"] for r in read_metrics(fit(cfg, reward_fn=even_token_reward))]

    learned = reward_curve("3e-2", "learn")
    frozen = reward_curve("0.0", "frozen")
    gain = sum(learned[-5:]) / 5 - sum(learned[:5]) / 5
    assert gain > 0.2, learned
    assert abs(sum(frozen[-5:]) / 5 - sum(frozen[:5]) / 5) < gain / 2, frozen


def test_resume_matches_the_uninterrupted_run(tmp_path):
    from restlit.train import fit

    common = ["trainer.checkpoint_every=2", "objective.curriculum.total_steps=4"]
    straight = fit(tiny_config(tmp_path / "a", "trainer.max_steps=4", *common), reward_fn=even_token_reward)
    first = tiny_config(tmp_path / "b", "trainer.max_steps=2", *common)
    fit(first, reward_fn=even_token_reward)
    resumed = fit(tiny_config(tmp_path / "b", "trainer.max_steps=4", *common), resume=True, reward_fn=even_token_reward)
    a, b = read_metrics(straight), read_metrics(resumed)
    assert [int(r["step"]) for r in b][-2:] == [2, 3]
    for key in ("reward/total", "train/loss", "train/grad_norm", "curriculum/progress", "entropy/THINK"):
        assert b[-1][key] == pytest.approx(a[-1][key], rel=1e-5, abs=1e-7), key
        assert b[-2][key] == pytest.approx(a[-2][key], rel=1e-5, abs=1e-7), key
    sa = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["EntropyCurriculum"]
    sb = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["EntropyCurriculum"]
    assert sa["progress"] == sb["progress"] and sa["steps"] == sb["steps"] == 4
    assert torch.allclose(sa["running"], sb["running"])


def test_sft_reduces_the_target_loss(tmp_path):
    from restlit.data import ToolUseDataModule
    from restlit.models import load_policy
    from restlit.sft import SFTModule
    from restlit.train import build_tokenizer_and_policy, sft

    cfg = tiny_config(tmp_path, "sft.max_steps=8", "sft.batch_size=2", "sft.lr=1e-2", "trainer.val_every=4")
    tok, before = build_tokenizer_and_policy(cfg)
    data = ToolUseDataModule(cfg.data, tok)
    data.prepare_data()
    data.setup()
    items = data.train_items[:4]

    def target_nll(policy) -> float:
        module = SFTModule(cfg, policy.eval(), tok)
        with torch.no_grad():
            lps = [module.sample_logp(it) for it in items]
        return float(-sum(lp.sum() for lp in lps) / sum(lp.numel() for lp in lps))

    run_dir = sft(cfg)
    after = load_policy(str(run_dir / "final"))
    assert target_nll(after) < target_nll(before) - 1.0
    val = [row["val/sft_loss"] for row in read_metrics(run_dir) if "val/sft_loss" in row]
    assert len(val) == 2 and all(math.isfinite(v) for v in val) and val[1] < val[0]  # held-out loss, every 4 steps


# ---------------------------------------------------------------- DDP on CPU


@pytest.mark.slow
def test_ddp_curriculum_state_equals_one_process(tmp_path):
    """Two gloo ranks with one prompt each end with the same curriculum statistics on both ranks,
    equal to one process given both prompts."""
    def run(name: str, *extra: str) -> Path:
        out = tmp_path / name
        cmd = [sys.executable, "-m", "cli.main", "fit", "--config", str(TINY), "--set", f"output_dir={out}",
               "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "trainer.max_steps=2",
               "--set", "trainer.checkpoint_every=1", *extra]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                             timeout=600, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        return out

    single = run("single", "--set", "trainer.prompts_per_step=2")
    ddp = run("ddp", "--set", "trainer.prompts_per_step=1", "--set", "trainer.devices=2", "--set", "trainer.strategy=ddp")
    s1 = torch.load(single / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["EntropyCurriculum"]
    s2 = torch.load(ddp / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["EntropyCurriculum"]
    assert s2["steps"] == s1["steps"] == 2
    assert torch.allclose(s1["running"], s2["running"], rtol=1e-4, atol=1e-6)
    assert s1["running"][1].sum() > 0
    ranks = sorted((ddp / "curriculum").glob("rank*.pt"))
    assert len(ranks) == 2
    r0, r1 = (torch.load(p, weights_only=False) for p in ranks)
    assert torch.equal(r0["running"], r1["running"]) and r0["progress"] == r1["progress"]


def test_gradient_checkpointing_gives_the_same_gradient(tmp_path):
    from restlit.module import group_hidden
    from restlit.objective import logprobs_and_entropy_from_hidden
    from restlit.train import build_tokenizer_and_policy

    grads = []
    for checkpointing in (False, True):
        cfg = load_config(TINY, [f"model.gradient_checkpointing={str(checkpointing).lower()}"])
        tok, model = build_tokenizer_and_policy(cfg)
        model.train()
        torch.manual_seed(1)
        prompt, tokens = torch.randint(0, len(tok), (11,)), torch.randint(0, len(tok), (3, 6))
        hidden = group_hidden(model, prompt, tokens)
        logp, _ = logprobs_and_entropy_from_hidden(hidden, model.get_output_embeddings().weight, tokens)
        logp.sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        assert model.is_gradient_checkpointing == checkpointing
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def fit_observing_policy(monkeypatch, config, observe, prepare=lambda policy: policy) -> Path:
    """``fit(config)`` whose reward calls ``observe(policy)`` for every completion, i.e. between the
    steps' updates; ``prepare`` may alter the policy as it is built."""
    from restlit import train

    built = {}
    original = train.build_tokenizer_and_policy

    def capture(cfg):
        tok, policy = original(cfg)
        built["policy"] = prepare(policy)
        return tok, policy

    def reward(comp, item, step):
        observe(built["policy"])
        return even_token_reward(comp, item, step)

    monkeypatch.setattr(train, "build_tokenizer_and_policy", capture)
    return train.fit(config, reward_fn=reward)


def test_policy_trains_in_train_mode(tmp_path, monkeypatch):
    """from_pretrained returns eval mode; the update must run in train mode, or gradient checkpointing
    silently does nothing."""
    modes = []
    fit_observing_policy(monkeypatch, tiny_config(tmp_path, "trainer.max_steps=1"),
                         lambda policy: modes.append(policy.training), prepare=lambda policy: policy.eval())
    assert modes and all(modes)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A checkpoint is streamed to a temporary file and renamed: a save that fails midway leaves
    the previous checkpoint intact and no temporary file behind."""
    from restlit.train import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.arange(4.0)}, path)
    assert torch.load(path)["step"] == 1

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(4)}, path)
    monkeypatch.undo()
    assert torch.load(path)["step"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_gradients_are_released_before_the_next_rollout(tmp_path, monkeypatch):
    """After each optimizer step the gradients are freed (set to None), so the next rollout and the
    checkpoints do not carry a model-sized block of dead memory."""
    held = []
    run = fit_observing_policy(monkeypatch, tiny_config(tmp_path, "trainer.max_steps=3"),
                               lambda policy: held.append(sum(p.grad is not None for p in policy.parameters())))
    assert [int(r["skipped"]) for r in read_metrics(run)] == [0, 0, 0]  # steps 1 and 2 did update
    assert held and not any(held)
