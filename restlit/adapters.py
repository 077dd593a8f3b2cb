"""LoRA adapters on the policy (``model.lora``), with the ``peft`` library.

Each targeted linear layer ``W`` (default: every linear layer of attention and MLP) gets a trained
low-rank update while ``W`` stays frozen::

    y = W x + b + s B A x,        s = alpha / r,  A: [r, in],  B: [out, r] (B starts at 0)

so the policy starts as the base model, only ``A``, ``B`` (and ``modules_to_save``) get gradients
and optimizer state, and the base weights are never written. The KL reference is the policy with
its adapters disabled (:func:`disabled`: ``s B A`` dropped from every layer), the base model
itself, so no second copy is loaded.

The merged weight ``W' = W + s B A`` (``transpose``-d for a ``fan_in_fan_out`` layer) is what a
rollout engine samples from: :func:`merged_state_dict` computes it from a state dict (also the full
one gathered from FSDP shards) for the vLLM engine and for ``final/merged``; the transformers
engine packs it per layer (:func:`restlit.kernels.packed.linear_parts`). Merging never happens in
place: ``W + d - d`` is not ``W`` in floating point, and the base must stay bit-identical.

A run's ``final/`` holds the adapter (``adapter_config.json``, ``adapter_model.safetensors``,
loadable with ``peft.PeftModel.from_pretrained``), the tokenizer, and ``merged/``, a full Hugging
Face model with the adapters merged (servable as it is). :func:`load_adapter_dir` reads such a
directory back as the merged model: ``restlit.models`` does so wherever a model path is accepted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from restlit.errors import UserError

__all__ = ["ADAPTER_CONFIG", "MERGED", "AdapterError", "disabled", "is_adapted", "is_adapter_dir", "load_adapter_dir",
           "lora_layers", "merged_state_dict", "save_adapter", "wrap"]

ADAPTER_CONFIG = "adapter_config.json"
MERGED = "merged"
_PEFT_PREFIX = "base_model.model."


class AdapterError(UserError):
    """An adapter setting or directory the user must fix; the message is one line."""


def _linear_names(model: Any) -> list[str]:
    import torch

    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def check_targets(model: Any, target_modules: list[str], modules_to_save: list[str]) -> None:
    """An :class:`AdapterError` for a ``target_modules`` entry that names no linear layer of
    ``model`` or a ``modules_to_save`` entry that names no module (peft's suffix matching)."""
    linears = _linear_names(model)
    for target in target_modules:
        if target != "all-linear" and not any(_matches(n, target) for n in linears):
            known = ", ".join(sorted({n.rsplit(".", 1)[-1] for n in linears}))
            raise AdapterError(f"model.lora.target_modules: {target!r} matches no linear layer of this model "
                               f"(its linear layers: {known})")
    names = [n for n, _ in model.named_modules() if n]
    for target in modules_to_save:
        if not any(_matches(n, target) for n in names):
            raise AdapterError(f"model.lora.modules_to_save: {target!r} matches no module of this model")


def wrap(model: Any, config: Any, base: str | None = None) -> Any:
    """``model`` (a transformers causal LM) with fresh LoRA adapters as ``config`` (a
    :class:`restlit.config.LoraConfig`) describes: a ``peft.PeftModel`` whose base weights are
    frozen. ``base`` is recorded in ``adapter_config.json`` as the base model's path."""
    import peft

    check_targets(model, config.target_modules, config.modules_to_save)
    targets = "all-linear" if config.target_modules == ["all-linear"] else list(config.target_modules)
    peft_config = peft.LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=targets,
        modules_to_save=list(config.modules_to_save) or None, task_type="CAUSAL_LM",
        base_model_name_or_path=base,
    )
    return peft.get_peft_model(model, peft_config)


def is_adapted(model: Any) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (has adapters that can be disabled)."""
    return hasattr(type(model), "disable_adapter") and hasattr(model, "peft_config")


@contextlib.contextmanager
def disabled(model: Any) -> Iterator[Any]:
    """Within the block ``model`` computes without its adapters (the base model: the KL
    reference); a model without adapters is unchanged."""
    if not is_adapted(model):
        yield model
        return
    with model.disable_adapter():
        yield model


def lora_layers(model: Any) -> dict[str, tuple[float, bool]]:
    """``{name: (scaling, fan_in_fan_out)}`` of ``model``'s LoRA layers (the active adapter), by
    their names in ``model.named_modules()`` (those of its state dict)."""
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "lora_A") and hasattr(module, "scaling"):
            adapters = [a for a in module.active_adapters if a in module.lora_A]
            if adapters:
                out[name] = (float(module.scaling[adapters[0]]), bool(getattr(module, "fan_in_fan_out", False)))
    return out


def merged_state_dict(state: Mapping[str, Any], layers: Mapping[str, tuple[float, bool]],
                      adapter: str = "default") -> dict[str, Any]:
    """The base model's state dict under its own (Hugging Face) names with the adapters merged:
    ``W' = W + s B A`` per LoRA layer (``layers``, from :func:`lora_layers`; ``(B A)^T`` for a
    ``fan_in_fan_out`` layer), a ``modules_to_save`` module's trained copy in place of the
    original. ``state`` is a ``PeftModel``'s state dict (or the full one gathered from FSDP shards);
    the result holds new tensors only where a weight was merged, the others are ``state``'s."""
    import torch

    out: dict[str, Any] = {}
    for key, value in state.items():
        if ".lora_" in key or ".original_module." in key:  # adapters (merged below), replaced originals
            continue
        name = key.replace(f".modules_to_save.{adapter}.", ".")
        module, _, leaf = name.rpartition(".base_layer.")
        if module and module in layers and leaf == "weight":
            scale, transposed = layers[module]
            a, b = state[f"{module}.lora_A.{adapter}.weight"], state[f"{module}.lora_B.{adapter}.weight"]
            with torch.no_grad():
                delta = b.detach().to(torch.float32) @ a.detach().to(torch.float32)
                delta = (delta.T if transposed else delta) * scale
                value = (value.detach().to(torch.float32) + delta).to(value.dtype)
        if module:
            name = f"{module}.{leaf}"
        out[name.removeprefix(_PEFT_PREFIX)] = value
    return out


def save_adapter(policy: Any, state: Mapping[str, Any], tokenizer: Any, out: Path) -> None:
    """Write ``out``: the adapter (``adapter_config.json``, ``adapter_model.safetensors``) and the
    tokenizer, and ``out/merged`` the full model with the adapters merged and the tokenizer.
    ``state`` is the policy's full state dict (PEFT names)."""
    policy.save_pretrained(out, state_dict=dict(state))
    tokenizer.save_pretrained(out)
    merged = merged_state_dict(state, lora_layers(policy))
    policy.get_base_model().save_pretrained(out / MERGED, state_dict=merged)
    tokenizer.save_pretrained(out / MERGED)


def is_adapter_dir(path: Path) -> bool:
    """Whether ``path`` is an adapter directory (it holds ``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_adapter_dir(path: Path, load_base: Any) -> Any:
    """The model of an adapter directory with its adapters merged: ``path/merged`` when restlit
    wrote it, otherwise the base model named in ``adapter_config.json`` (``load_base(name)``
    loads it) with the adapter applied and merged."""
    path = Path(path)
    if (path / MERGED / "config.json").is_file():
        return load_base(str(path / MERGED))
    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{path / ADAPTER_CONFIG}: cannot be read ({exc})") from None
    if not base:
        raise AdapterError(f"{path}: an adapter without {MERGED}/ nor a base_model_name_or_path to apply it to")
    import peft

    model = peft.PeftModel.from_pretrained(load_base(base), str(path))
    return model.merge_and_unload()
