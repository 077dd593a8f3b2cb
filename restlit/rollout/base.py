"""The rollout engine protocol shared by the transformers and vLLM engines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from restlit.config.sections import SamplingConfig


@dataclass
class Completion:
    """One sampled completion of one prompt.

    ``token_ids`` are the generated ids only (no prompt, no padding), ending with the EOS id when
    the model stopped by itself. ``logprobs`` are the engine's own sampling log-probs per token,
    when the engine reports them, and ``entropies`` the entropy of the distribution each token was
    sampled from (same temperature) when the engine can compute it. ``finish_reason`` is ``"stop"`` (EOS or a stop string) or
    ``"length"`` (cut at ``max_new_tokens``)."""

    prompt_index: int
    token_ids: list[int]
    text: str
    finish_reason: str
    logprobs: list[float] | None = None
    entropies: list[float] | None = None


class RolloutEngine(Protocol):
    """Samples completions; keeps its weights in step with the policy being trained. ``pad_id`` is
    the id that pads its completions into tensors (the tokenizer's pad, else its first EOS)."""

    pad_id: int

    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        """``sampling.n`` completions for each prompt (token ids, no padding), grouped per prompt
        in prompt order."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the engine sample from ``model``'s current weights."""
        ...

    def close(self) -> None:
        """Give back what the engine holds (a no-op for an engine that holds nothing of its own);
        a closed engine is not used again."""
        ...


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a completion: the tokenizer's EOS and the model's generation-config EOS
    ids (chat models often stop on an end-of-turn token that is not the tokenizer's EOS)."""
    eos = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    eos.discard(None)
    if not eos:
        raise ValueError("the tokenizer has no EOS token: generation would never stop")
    return sorted(eos)


def transformers_model(model: Any) -> Any:
    """The transformers model an engine works with: a ``peft.PeftModel``'s own base model (its LoRA
    layers in place, so the current adapters take part: the transformers engine's packed and fused
    paths multiply by their merged weights, :func:`restlit.kernels.packed.linear_parts`), or
    ``model`` itself."""
    get_base = getattr(type(model), "get_base_model", None)
    return model.get_base_model() if get_base is not None and hasattr(model, "peft_config") else model
