"""``restlit.sft``: the supervised warm start lowers the target loss and logs the held-out loss."""

from __future__ import annotations

import math

import torch

from tests.training import read_metrics, tiny_config


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
