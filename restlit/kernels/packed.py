"""Linear layers with their weights pre-packed for oneDNN, for generation on a CPU.

A decoding step multiplies a few rows (the sequences decoded together) by every weight matrix of
the model. ``torch.nn.functional.linear`` hands that to a general matrix product, which repacks
the weight into its blocked layout at every call: for a weight that does not fit in the caches,
i.e. every weight of a decoding step, that is an extra pass over memory. oneDNN can pack a weight
once (``torch.ops.mkldnn._reorder_linear_weight``, the layout torch.compile's CPU freezing pass
uses) and multiply by the packed copy afterwards (``torch.ops.mkldnn._linear_pointwise``).

The packing hint is the expected row count (the rows decoded together). What packing gains per
projection and per decoding step is in ``benchmarks/RESULTS.md`` (``bench_kernels``).

:func:`packed_linears` packs every plain ``torch.nn.Linear`` of a model for the duration of a
``with`` block and restores the modules after it; a LoRA layer (``peft``) is packed whole, on its
merged weight ``W + s B A`` (:func:`linear_parts`), so generation runs on the current adapters
without merging them into the base weights. The packed copies are taken when the block
starts, so the block must not span an optimizer step (the rollout engine packs at each
``generate``: the weights it samples from change between steps); they cost one copy of the
linear weights (the tied LM head included) while the block runs. It applies only where it can:
CPU float32 weights, no gradient being recorded, torch built with oneDNN; otherwise the block
changes nothing. The results equal ``F.linear``'s up to float32 rounding (a different summation
order; tested within 1e-5 relative on logits).

Under CPU autocast to bfloat16 (``trainer.precision: bf16-mixed``: Lightning runs the rollout inside
it) the copies are packed in bfloat16 and each layer multiplies its input cast to bfloat16, giving
bfloat16, as autocast's own linear does; autocast instead casts every float32 weight at every call.
On a CPU whose oneDNN cannot pack bfloat16 (:func:`bf16_packing_supported`) nothing is packed under
that autocast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["linear_parts", "packed_linear", "packed_linears", "packing_available"]

_ATTRIBUTE = "_restlit_packed"


def packing_available() -> bool:
    """Whether this torch has oneDNN and the packed-linear operators."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (torch.backends.mkldnn.is_available() and ops is not None
            and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))


def linear_parts(module: Any) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """``(W, b)`` that a linear layer multiplies by, detached: a plain ``torch.nn.Linear``'s own; for
    a LoRA layer (``peft``'s ``lora.Linear`` around a plain ``torch.nn.Linear``) its merged weight
    ``W + s B A`` over the active adapters, computed now into a new tensor (the layer's own weights
    are not touched; the adapters of a disabled or already merged layer add nothing); None for any
    other module (DoRA layers included, whose merge is not a plain sum)."""
    if type(module) is torch.nn.Linear:
        return module.weight.detach(), None if module.bias is None else module.bias.detach()
    base = getattr(module, "base_layer", None)
    if type(base) is not torch.nn.Linear or not hasattr(module, "get_delta_weight") or any(
            getattr(module, "use_dora", {}).values()):
        return None
    weight = base.weight.detach()
    if not module.disable_adapters and not module.merged:
        with torch.no_grad():
            for name in module.active_adapters:
                if name in module.lora_A:
                    weight = weight + module.get_delta_weight(name).to(weight.dtype)
    return weight, None if base.bias is None else base.bias.detach()


def _packable(module: torch.nn.Module) -> bool:
    parts = linear_parts(module)
    if parts is None:
        return False
    weight, bias = getattr(module, "base_layer", module).weight, parts[1]
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and (bias is None or bias.dtype == weight.dtype)


class _PackedForward:
    """``y = x W^T + b`` through the copy of ``W`` packed in ``dtype`` at construction; ``x`` is
    cast to ``dtype`` (it is already, in float32)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, rows: int, dtype: torch.dtype):
        self.dtype = dtype
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype).contiguous(), max(1, int(rows)))
        self.bias = None if bias is None else bias.detach().to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype not in (torch.float32, self.dtype) or x.device.type != "cpu" or torch.is_grad_enabled():
            raise RuntimeError(f"a packed linear runs only on float32 or {self.dtype} CPU inputs without gradients")
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype).contiguous(), self.weight, self.bias, "none", [], "")


def packed_linear(weight: torch.Tensor, bias: torch.Tensor | None, rows: int,
                  dtype: torch.dtype = torch.float32) -> _PackedForward:
    """``x -> x W^T + b`` on a copy of ``weight`` (``[out, in]``) packed in ``dtype`` for ``rows``
    rows, for inputs without gradients: what :func:`packed_linears` puts on each layer, and what
    the fused decoder of :mod:`restlit.decoding` multiplies its stacked projections with."""
    return _PackedForward(weight, bias, rows, dtype)


def bf16_packing_supported() -> bool:
    """Whether oneDNN can pack bfloat16 weights on this CPU (it needs AVX-512 BW/VL/DQ or
    AVX-NE-CONVERT; an AVX2-only CPU cannot)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check is not None and check())


def _pack_dtype() -> torch.dtype | None:
    """The dtype the linear layers multiply in here: float32, or autocast's bfloat16 where this CPU
    can pack it; None otherwise (left to autocast)."""
    if not torch.is_autocast_enabled("cpu"):
        return torch.float32
    if torch.get_autocast_dtype("cpu") == torch.bfloat16 and bf16_packing_supported():
        return torch.bfloat16
    return None


@contextmanager
def packed_linears(model: Any, rows: int) -> Iterator[int]:
    """Within the block, every plain ``torch.nn.Linear`` of ``model`` (CPU, float32) multiplies by a
    oneDNN-packed copy of its weight taken now; ``rows`` is the row count to pack for (the
    sequences decoded together). Yields how many layers were packed (0 when packing does not
    apply: another device or dtype, gradients enabled, CPU autocast to float16, no oneDNN); under
    CPU autocast to bfloat16 the copies are bfloat16. Nested blocks on the same model pack nothing
    more. The modules are restored when the block ends, also on an error."""
    dtype = _pack_dtype()
    if torch.is_grad_enabled() or dtype is None or not packing_available():
        yield 0
        return
    modules, inside = [], ()  # a LoRA layer is packed whole (merged), its inner linears not again
    for name, m in model.named_modules():
        if inside and name.startswith(inside):
            continue
        if _packable(m) and _ATTRIBUTE not in m.__dict__:
            modules.append(m)
            inside = (name + ".",) if type(m) is not torch.nn.Linear else inside
    try:
        for module in modules:
            module.__dict__[_ATTRIBUTE] = True
            module.forward = _PackedForward(*linear_parts(module), rows, dtype)
        yield len(modules)
    finally:
        for module in modules:
            module.__dict__.pop("forward", None)
            module.__dict__.pop(_ATTRIBUTE, None)
