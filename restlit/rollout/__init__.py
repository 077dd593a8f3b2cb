"""Rollout engines: turn prompt token ids into sampled completions.

``RolloutEngine`` is the protocol; ``restlit.rollout.hf.HFEngine`` implements it with a
transformers model, ``restlit.rollout.vllm.VLLMEngine`` with an in-process vLLM.
:func:`build_engine` builds the one a run configures; engines are imported lazily, so that this
package stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from restlit.rollout.base import Completion, RolloutEngine, SamplingConfig

if TYPE_CHECKING:
    from restlit.config import RunConfig


def build_engine(config: RunConfig, policy: Any, tokenizer: Any, weights: Any = None) -> RolloutEngine:
    """The engine of ``config.rollout.engine`` for ``policy``: ``hf`` samples from the policy module
    itself; ``vllm`` builds an engine sized by the config (``max_model_len`` 0: the longest prompt
    plus ``max_new_tokens``, within the model's own limit) and loads ``weights`` (the policy's full
    state dict, see :func:`restlit.training.distributed.full_state_dict`; default: ``policy.state_dict()``)."""
    r = config.rollout
    if r.engine == "vllm":
        from restlit.rollout.vllm import VLLMEngine

        longest = config.data.max_prompt_tokens + r.max_new_tokens
        limit = getattr(policy.config, "max_position_embeddings", None) or longest
        return VLLMEngine(
            policy, tokenizer, weights=weights, max_model_len=r.max_model_len or min(longest, limit),
            gpu_memory_utilization=r.gpu_memory_utilization, kv_cache_gb=r.kv_cache_gb,
            enforce_eager=r.enforce_eager, dtype=None if r.dtype == "auto" else r.dtype, seed=config.trainer.seed,
        )
    from restlit.rollout.hf import HFEngine

    return HFEngine(policy, tokenizer, r.prompt_batch_size, packed=r.pack_weights)


__all__ = ["Completion", "RolloutEngine", "SamplingConfig", "build_engine"]
