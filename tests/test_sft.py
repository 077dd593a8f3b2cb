"""``restlit.sft``: the supervised warm start lowers the target loss and logs the held-out loss; one
backward per sample gives the batch gradient and runs under DDP; its own checkpointing mode."""

from __future__ import annotations

import math

import pytest
import torch

from tests.training import read_metrics, tiny_config


def test_sft_reduces_the_target_loss(tmp_path):
    from restlit.models import load_policy
    from restlit.training.data import ToolUseDataModule
    from restlit.training.run import build_tokenizer_and_policy, sft
    from restlit.training.sft import SFTModule

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
    norms = [row["sft/grad_norm"] for row in read_metrics(run_dir) if "sft/grad_norm" in row]
    assert len(norms) == 8 and all(math.isfinite(v) and v > 0 for v in norms)


def test_sft_has_its_own_checkpointing_mode(tmp_path, monkeypatch):
    """``sft.gradient_checkpointing`` overrides the model's for the warm start; unset, the model's holds."""
    from restlit.training import checkpointing
    from restlit.training.run import sft

    modes = []
    monkeypatch.setattr(checkpointing, "enable", lambda policy, mode: modes.append(mode))
    sft(tiny_config(tmp_path / "a", "sft.max_steps=1", "model.gradient_checkpointing=true",
                    "sft.gradient_checkpointing=selective"))
    sft(tiny_config(tmp_path / "b", "sft.max_steps=1", "model.gradient_checkpointing=true"))
    assert modes == ["selective", True]


def test_one_backward_per_sample_gives_the_batch_gradient(tmp_path):
    """``batch_loss(backward=...)`` runs each sample's share through its own backward; the gradient
    and the loss are those of one backward of the whole batch's mean."""
    from restlit.training.data import ToolUseDataModule
    from restlit.training.run import build_tokenizer_and_policy
    from restlit.training.sft import SFTModule

    cfg = tiny_config(tmp_path)
    tok, policy = build_tokenizer_and_policy(cfg)
    data = ToolUseDataModule(cfg.data, tok)
    data.prepare_data()
    data.setup()
    module = SFTModule(cfg, policy.train(), tok)
    batch = data.train_items[:3]
    assert len({module.sample_ids(it)[1] for it in batch}) > 1  # unequal shares

    def gradient(**kwargs):
        policy.zero_grad(set_to_none=True)
        loss, n = module.batch_loss(batch, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return float(loss), n, torch.cat([p.grad.flatten() for p in policy.parameters()])

    whole, per_sample = gradient(), gradient(backward=torch.Tensor.backward)
    assert whole[1] == per_sample[1] == sum(module.sample_ids(it)[1] for it in batch)
    assert math.isclose(whole[0], per_sample[0], rel_tol=1e-6)
    assert torch.allclose(whole[2], per_sample[2], atol=1e-7, rtol=1e-5)


def test_sft_refuses_a_cut_that_can_leave_no_target(tmp_path):
    """A prompt as long as ``sft.max_seq_tokens`` would have no target token, hence no backward."""
    from restlit.errors import UserError
    from restlit.training.run import sft

    with pytest.raises(UserError, match=r"sft.max_seq_tokens \(512\) must exceed data.max_prompt_tokens \(512\)"):
        sft(tiny_config(tmp_path, "sft.max_seq_tokens=512", "data.max_prompt_tokens=512"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_sft_under_ddp_keeps_the_ranks_in_step(tmp_path):
    """Two gloo ranks, one backward per sample each: the run ends (a rank that skipped an all-reduce
    would hang it until the timeout), logs every step and exports weights that moved."""
    import os
    import subprocess
    import sys
    import textwrap

    from restlit.models import load_policy
    from restlit.training.run import build_tokenizer_and_policy
    from tests.conftest import REPO

    script = tmp_path / "sft_script.py"
    script.write_text(textwrap.dedent("""
        import sys
        from restlit.config import load_config
        from restlit.training.run import sft
        from tests.training import TINY

        sft(load_config(TINY, sys.argv[1:]))
    """))
    overrides = [f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}", "sft.max_steps=2",
                 "sft.batch_size=2", "sft.lr=1e-2", "trainer.devices=2", "trainer.strategy=ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(script), *overrides], capture_output=True, text=True, cwd=REPO,
                         env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    norms = [row["sft/grad_norm"] for row in read_metrics(tmp_path / "run" / "sft") if "sft/grad_norm" in row]
    assert len(norms) == 2 and all(math.isfinite(v) and v > 0 for v in norms)
    _, start = build_tokenizer_and_policy(tiny_config(tmp_path))
    after = load_policy(str(tmp_path / "run" / "sft" / "final"))
    moved = [not torch.equal(a, b) for a, b in zip(start.state_dict().values(), after.state_dict().values())]
    assert any(moved)
