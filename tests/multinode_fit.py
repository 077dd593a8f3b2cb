"""``restlit fit`` with a toy reward that varies per completion, for the multi-node test (the
tiny random model never produces a valid tool call, so ToolRL's reward would skip every step).

Usage: ``python -m tests.multinode_fit [--resume] KEY=VALUE ...`` (overrides of the tiny config).
"""

from __future__ import annotations

import sys

from restlit.config import load_config
from restlit.rewards import Reward, RewardBounds
from restlit.training.run import fit
from tests.conftest import REPO


def low_id_reward(completion, item, step) -> Reward:
    """The share of sampled token ids below 1000: varies per completion, learnable."""
    ids = completion.token_ids
    low = len([t for t in ids if t < 1000]) / len(ids) if ids else 0.0
    return Reward(0.0, low, low, RewardBounds(0.0, 0.0, 0.0, 1.0))


if __name__ == "__main__":
    args = sys.argv[1:]
    resume = "--resume" in args
    config = load_config(REPO / "configs" / "tiny-test.yaml", [a for a in args if a != "--resume"])
    fit(config, resume=resume, reward_fn=low_id_reward)
