"""The optimizer, the LR schedule and the gradient clipping of ``fit`` and ``sft``: AdamW without
weight decay on norms and biases, then a linear warm-up into a constant, linear or cosine schedule;
clipping by the global norm (both modules optimise manually, so Lightning's clipping is not used).

The schedule is a function of the training step (one scheduler step per training step, however many
PPO epochs a step runs), so a run of ``total_steps`` steps ends with the LR at its final value::

    factor(k) = (k + 1) / warmup                                  k < warmup
    factor(k) = 1 | 1 - d | (1 + cos(pi d)) / 2,  d = min(1, (k - warmup) / max(1, total - warmup))

for ``constant | linear | cosine``; ``k`` is the number of scheduler steps taken (0 before the
first), the LR is ``lr * factor(k)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from restlit.config import OptimConfig


def lr_factor(step: int, config: OptimConfig, total_steps: int) -> float:
    """The LR multiplier after ``step`` scheduler steps (formula in the module docstring)."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, total_steps - config.warmup_steps)
    done = min(1.0, (step - config.warmup_steps) / span)
    if config.schedule == "linear":
        return 1.0 - done
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    return 1.0


def build_optimizer(model: torch.nn.Module, config: OptimConfig, *, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters; 1-D parameters and norms get no weight decay.
    ``lr`` overrides ``config.lr`` (``sft.lr`` for the warm start)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.dim() < 2 or "norm" in name.lower() else decay).append(param)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr if lr is None else lr, betas=config.betas, eps=config.eps,
    )


def configure(model: torch.nn.Module, config: OptimConfig, total_steps: int, *, lr: float | None = None,
              schedule: bool = True) -> dict[str, Any]:
    """What a LightningModule's ``configure_optimizers`` returns: the optimizer and, stepped once per
    training step, the LR schedule over ``total_steps`` (``schedule=False``: a constant LR)."""
    optimizer = build_optimizer(model, config, lr=lr)
    total = max(1, total_steps)
    factor = (lambda step: lr_factor(step, config, total)) if schedule else (lambda step: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def clip_gradients(model: torch.nn.Module, policy: torch.nn.Module, max_norm: float) -> float:
    """Clip ``policy``'s gradients by their global norm (``max_norm <= 0``: no clipping) and return
    the norm before clipping. ``model`` is the strategy's wrapped model: under FSDP1 its own
    ``clip_grad_norm_`` computes the norm over the shards."""
    limit = max_norm if max_norm > 0 else float("inf")
    if hasattr(model, "clip_grad_norm_"):  # FullyShardedDataParallel
        return float(model.clip_grad_norm_(limit))
    params = [p for p in policy.parameters() if p.grad is not None]
    return float(torch.nn.utils.clip_grad_norm_(params, limit))

