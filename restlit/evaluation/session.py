"""Greedy generation for a conversation that grows, on a transformers model, keeping its KV cache.

A multi-turn entry re-sends its whole conversation at every step: the system prompt with the tool
list (thousands of tokens), the turns so far, each step's calls and tool results. The model's
output is a function of the tokens only, so the keys and values of a prefix the model has already
read can be kept: :class:`PrefixCacheGenerator` remembers the token ids its cache holds (the last
prompt and the completion fed after it), and at the next call crops the cache to the longest
common prefix with the new prompt and encodes only the rest. When the re-rendered conversation
tokenises the previous completion the way it was generated, the new work is the tool results and
the next user message; when it does not, the cache is cut where they first differ, so the
output is the same as without reuse (``reuse=False`` encodes every prompt from scratch; the
benchmark compares both). The cache lives in :class:`restlit.kvcache.PreallocatedLayer` buffers
that grow by doubling: transformers' own cache copies itself at every decoded token, which at a
4,400-token prompt cost a third of each step.

A prompt that leaves no room in the model's context raises
:class:`restlit.evaluation.multiturn.ContextOverflow`; generation stops at an EOS id, or at the
context's end, or after ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from restlit.evaluation.multiturn import ContextOverflow
from restlit.kvcache import preallocate
from restlit.packed import packed_linears
from restlit.rollout.base import eos_ids
from restlit.tokens import prompt_ids

__all__ = ["PrefixCacheGenerator", "common_prefix"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCacheGenerator:
    """``generator(messages) -> text``: greedy completions of chat messages by ``model``.

    ``max_context``: positions the model may use (default: the config's
    ``max_position_embeddings``); ``reuse``: keep the KV cache between calls (call :meth:`reset`
    between unrelated conversations; it is also safe not to, the common prefix is then the shared
    system prompt at most). ``encoded`` counts the prompt tokens actually run through the model.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int = 512, max_context: int | None = None,
                 reuse: bool = True):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.max_context = max_context or getattr(model.config, "max_position_embeddings", None)
        self.reuse = reuse
        self.eos = set(eos_ids(model, tokenizer))
        self.encoded = 0
        self.reset()

    @contextmanager
    def packed(self) -> Iterator[None]:
        """Calls within the block run on the model's linear weights packed once for the one row
        this generator decodes (:mod:`restlit.packed`; packing at every call would repeat ~0.3 s
        per step): wrap a whole run of conversations in it."""
        with torch.no_grad(), packed_linears(self.model, rows=1):
            yield

    def reset(self) -> None:
        """Forget the cache (a new conversation)."""
        self._cache: Any = None
        self._ids: list[int] = []

    @torch.no_grad()
    def __call__(self, messages: Sequence[Mapping[str, str]]) -> str:
        ids = prompt_ids(self.tokenizer, messages)
        budget = self.max_new_tokens
        if self.max_context is not None:
            if len(ids) >= self.max_context:
                self.reset()
                raise ContextOverflow(f"prompt of {len(ids)} tokens for a context of {self.max_context}")
            budget = min(budget, self.max_context - len(ids))
        keep = 0
        if self.reuse and self._cache is not None:
            # at least one prompt token is run, for the next-token logits
            keep = min(common_prefix(self._ids, ids), len(ids) - 1)
        if keep == 0:
            self._cache = None
        elif len(self._ids) > keep:
            self._cache.crop(keep - len(self._ids))  # a negative count: drop that many positions
        device = next(self.model.parameters()).device
        self.encoded += len(ids) - keep
        out = self.model(input_ids=torch.tensor([ids[keep:]], device=device), past_key_values=self._cache,
                         use_cache=True, logits_to_keep=1)
        if self._cache is None:  # a fresh prefill: move it into buffers that are written in place
            preallocate(out.past_key_values, len(ids) + budget, growable=True)
        fed = list(ids)
        generated: list[int] = []
        while True:
            token = int(out.logits[0, -1].argmax())
            generated.append(token)
            if token in self.eos or len(generated) >= budget:
                break
            out = self.model(input_ids=torch.tensor([[token]], device=device), past_key_values=out.past_key_values,
                             use_cache=True)
            fed.append(token)
        self._cache, self._ids = (out.past_key_values, fed) if self.reuse else (None, [])
        return self.tokenizer.decode(generated, skip_special_tokens=True)
