"""``restlit.train``: fit, resume and DDP on the tiny config, atomic checkpoints."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from restlit.config import load_config
from tests.conftest import REPO
from tests.training import TINY, even_token_reward, read_metrics, tiny_config


def test_tiny_fit_runs_and_logs_finite_metrics(tmp_path, monkeypatch):
    import inspect

    from restlit.kernels import memory
    from restlit.models import load_policy
    from restlit.training.run import fit

    callers = []
    release = memory.release
    monkeypatch.setattr(memory, "release", lambda: callers.append(inspect.currentframe().f_back.f_code.co_name)
                        or release())
    cfg = tiny_config(tmp_path, "trainer.max_steps=3", "trainer.val_every=2", "data.val_limit=2")
    run_dir = fit(cfg, reward_fn=even_token_reward)
    # freed memory goes back after every rollout, every group's backward and every step
    assert callers.count("on_train_batch_end") == 3
    assert callers.count("on_after_backward") == 3 * cfg.trainer.prompts_per_step
    assert callers.count("generate") >= 3
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


def test_tiny_fit_runs_under_cpu_mixed_precision(tmp_path):
    """``trainer.precision: bf16-mixed`` on a CPU (fast where the CPU multiplies bfloat16 in
    hardware): the rollout, the update and the export run under Lightning's autocast, the weights
    stay float32 and move."""
    from restlit.models import load_policy
    from restlit.training.run import build_tokenizer_and_policy, fit

    cfg = tiny_config(tmp_path, "trainer.max_steps=2", "trainer.precision=bf16-mixed")
    start = build_tokenizer_and_policy(cfg)[1].state_dict()
    run_dir = fit(cfg, reward_fn=even_token_reward)
    rows = read_metrics(run_dir)
    assert [int(r["step"]) for r in rows] == [0, 1]
    assert all(math.isfinite(r["train/loss"]) and math.isfinite(r["train/grad_norm"]) for r in rows)
    final = load_policy(str(run_dir / "final")).state_dict()
    assert all(v.dtype == torch.float32 for v in final.values())
    assert any(not torch.equal(final[k], start[k]) for k in start)


def test_auto_precision_is_mixed_only_where_bfloat16_is_fast(monkeypatch):
    from restlit.training.run import resolve_precision

    for amx, expected in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        assert resolve_precision("auto", "cpu") == expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "auto") == "32-true"  # no GPU, a CPU without AMX
    assert resolve_precision("auto", "gpu") == "32-true"   # no GPU to run bfloat16 on
    assert resolve_precision("16-mixed", "cpu") == "16-mixed" and resolve_precision("32-true", "gpu") == "32-true"


@pytest.mark.slow
def test_mean_reward_rises_when_the_update_works(tmp_path):
    """On the toy reward the tiny model learns within a few dozen steps; with lr 1e-12 (practically 0,
    which the config refuses) it does not."""
    from restlit.training.run import fit

    def reward_curve(lr: str, name: str) -> list[float]:
        cfg = load_config(TINY, [f"output_dir={tmp_path / name}", f"data.cache_dir={tmp_path / 'cache'}",
                                 "trainer.max_steps=30", f"optim.lr={lr}", "rollout.n=8",
                                 "rollout.max_new_tokens=8", "trainer.checkpoint_every=100"])
        return [r["reward/total"] for r in read_metrics(fit(cfg, reward_fn=even_token_reward))]

    learned = reward_curve("3e-2", "learn")
    frozen = reward_curve("1e-12", "frozen")
    gain = sum(learned[-5:]) / 5 - sum(learned[:5]) / 5
    assert gain > 0.2, learned
    assert abs(sum(frozen[-5:]) / 5 - sum(frozen[:5]) / 5) < gain / 2, frozen

def test_resume_matches_the_uninterrupted_run(tmp_path):
    from restlit.training.run import fit

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

@pytest.mark.slow
def test_ddp_curriculum_state_equals_one_process(tmp_path):
    """Two gloo ranks with one prompt each end with the same curriculum statistics on both ranks,
    equal to one process given both prompts. The toy reward gives every step an advantage: a
    skipped step would leave the curriculum untouched on every rank."""
    script = tmp_path / "fit_script.py"
    script.write_text(textwrap.dedent("""
        import sys
        from restlit.config import load_config
        from restlit.training.run import fit
        from tests.training import TINY, even_token_reward

        fit(load_config(TINY, sys.argv[1:]), reward_fn=even_token_reward)
    """))

    def run(name: str, *extra: str) -> Path:
        out = tmp_path / name
        cmd = [sys.executable, str(script), f"output_dir={out}", f"data.cache_dir={tmp_path / 'cache'}",
               "trainer.max_steps=2", "trainer.checkpoint_every=1", *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        assert [r["skipped"] for r in read_metrics(out)] == [0.0, 0.0]
        return out

    single = run("single", "trainer.prompts_per_step=2")
    ddp = run("ddp", "trainer.prompts_per_step=1", "trainer.devices=2", "trainer.strategy=ddp")
    s1 = torch.load(single / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["EntropyCurriculum"]
    s2 = torch.load(ddp / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"]["EntropyCurriculum"]
    assert s2["steps"] == s1["steps"] == 2
    assert torch.allclose(s1["running"], s2["running"], rtol=1e-4, atol=1e-6)
    assert s1["running"][1].sum() > 0
    ranks = sorted((ddp / "curriculum").glob("rank*.pt"))
    assert len(ranks) == 2
    r0, r1 = (torch.load(p, weights_only=False) for p in ranks)
    assert torch.equal(r0["running"], r1["running"]) and r0["progress"] == r1["progress"]


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    """A checkpoint is streamed to a temporary file and renamed: a save that fails midway leaves
    the previous checkpoint intact and no temporary file behind."""
    from restlit.training.checkpoints import AtomicCheckpointIO

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
