"""Gradient checkpointing of a policy's decoder layers: off, full, or selective.

- ``True`` (full): each decoder layer keeps only its input; the backward runs the layer's forward
  again to rebuild everything else. A step costs one more forward (about a third more compute)
  for a fraction of the activation memory.
- ``"selective"``: the recomputation keeps the outputs of the layer's matrix products and of its
  attention kernel (:data:`SAVED_OPS`) from the first forward and reruns only the elementwise
  operations between them (norms, rotary embedding, SiLU, residual adds).
- ``False``: nothing recomputed, every activation kept.

The gradients are the same in all three, and selective checkpointing's backward runs exactly the
matrix products of the backward without checkpointing (``tests/test_module.py``). Their time and
peak memory on the demo's SFT batches are ``bench_sft``'s rows in ``benchmarks/RESULTS.md``. What
selective saves is bounded by the recomputed forward: a quarter of a step's matrix-product FLOPs
(2N of 8N per token) and one of its three attention kernels.

Selective checkpointing is torch's ``create_selective_checkpoint_contexts`` with a policy over
aten operations, given to transformers' non-reentrant checkpoint as its ``context_fn``.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import torch
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

Mode = bool | Literal["selective"]


def _saved_ops() -> frozenset:
    """The aten operations whose outputs selective checkpointing keeps: matrix products and the
    fused attention kernels (CPU flash; CUDA flash, memory-efficient and cuDNN where torch has them)."""
    aten = torch.ops.aten
    names = ["mm", "addmm", "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention"]
    return frozenset(getattr(aten, name).default for name in names if hasattr(aten, name))


SAVED_OPS = _saved_ops()


def _policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
    """Called for every aten operation of a checkpointed layer's forward and recomputation."""
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def enable(policy: Any, mode: Mode) -> None:
    """Set ``policy``'s (a transformers model's) gradient checkpointing to ``mode``."""
    if mode is False:
        policy.gradient_checkpointing_disable()
        return
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if mode == "selective":
        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _policy)
    policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
