"""Rollout engines: turn prompt token ids into sampled completions.

``RolloutEngine`` is the protocol; ``restlit.rollout.hf.HFEngine`` implements it with transformers
``generate``. Import engines from their modules so that this package stays light.
"""

from restlit.rollout.base import Completion, RolloutEngine, SamplingConfig

__all__ = ["Completion", "RolloutEngine", "SamplingConfig"]
