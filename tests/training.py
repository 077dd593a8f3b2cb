"""Helpers shared by the training tests (fit, module, curriculum, sft): the tiny config, its
metrics, a toy reward, and a fit that watches the policy between steps."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from restlit.config import load_config
from restlit.rewards import Reward, RewardBounds
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


def constant_reward(completion, item, step) -> Reward:
    """Every completion scores the same: no group has an advantage, every step is skipped."""
    return Reward(0.0, 1.0, 1.0, RewardBounds(0, 0, 0, 1))


def curriculum_state(run_dir: Path) -> dict:
    """The curriculum's state in the run's last checkpoint."""
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["callbacks"]["EntropyCurriculum"]


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
