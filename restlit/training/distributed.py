"""What crosses ranks: sums over ranks and the full (unsharded) state dict.

Every cross-rank reduction of a training step goes through :func:`reduce_sum` (the skip decision,
the loss denominator, the region entropy statistics), called by the module; the pieces it feeds
(the curriculum, the objective) only ever see global values. Single device, DDP and FSDP alike:
``trainer.strategy.reduce`` is the identity on one process.
"""

from __future__ import annotations

from typing import Any

import torch


def reduce_sum(strategy: Any, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over all ranks (every rank must call this), on the strategy's device."""
    return strategy.reduce(tensor.to(strategy.root_device), reduce_op="sum")


def full_state_dict(model: Any, root: Any = None, prefix: str = "") -> dict[str, torch.Tensor]:
    """``model``'s full weights under Hugging Face names.

    Without sharding this is ``model.state_dict()`` (no copy). When ``root`` (the module the
    strategy wrapped, ``trainer.strategy.model``) holds FSDP-sharded parameters (FSDP1 modules or
    FSDP2 DTensors), the weights are gathered from all ranks with
    ``get_model_state_dict(root, full_state_dict=True)``, a collective that every rank must call,
    and the keys under ``prefix`` (the policy's name inside ``root``, e.g. ``"policy."``) are kept
    with the prefix removed. Not offloaded to the CPU: with ``cpu_offload`` only rank 0 would
    receive them."""
    if root is not None and is_sharded(root):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return model.state_dict()


def is_sharded(module: Any) -> bool:
    """Whether ``module`` holds FSDP-sharded parameters (FSDP1 units or FSDP2 DTensors)."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed support
        return False
    if any(isinstance(m, FullyShardedDataParallel) for m in module.modules()):
        return True
    return any(isinstance(p, DTensor) for p in module.parameters())
