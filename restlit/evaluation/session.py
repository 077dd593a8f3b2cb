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
benchmark compares both). The cache lives in :class:`restlit.kernels.kvcache.PreallocatedLayer` buffers
that grow by doubling: transformers' own cache copies itself at every decoded token, which at a
4,400-token prompt cost a third of each step.

Several conversations decode together (``restlit eval --batch-size`` of them): each keeps its own cache in a
*slot*, encodes its new tokens alone, and the decoding steps run all slots' rows in one forward,
each row attending its own cache (:func:`restlit.kernels.kvcache.rows_cache`), so one read of the weights
serves every row. A row leaves the step once it ends; the last one left decodes alone.
:meth:`PrefixCacheGenerator.many` answers a given set of conversations so;
:meth:`PrefixCacheGenerator.serve` (what ``restlit eval`` runs) keeps them going: when a row ends, its
conversation's next prompt (the entry's next step, or the next entry, or the next single-turn
item: :meth:`PrefixCacheGenerator.answers`) is encoded into its slot at once and joins the next
step, so no step waits for the slowest row of a round (continuous batching).

On the vLLM engine (``restlit eval --engine vllm``) :class:`EngineGenerator` serves in rounds: every
running conversation of a round goes to the engine in one ``generate`` call; vLLM's automatic prefix caching
keeps the blocks of each conversation's earlier steps, so the same reuse comes from the engine.

A prompt that leaves no room in the model's context raises
:class:`restlit.evaluation.multiturn.ContextOverflow` (:meth:`PrefixCacheGenerator.many` returns
the exception in that conversation's place instead); generation stops at an EOS id, or at the context's end, or
after ``max_new_tokens``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from restlit.evaluation.multiturn import ContextOverflow
from restlit.formats import prompt_ids
from restlit.kernels.attention import ROWS
from restlit.kernels.kvcache import PreallocatedLayer, preallocate, rows_cache
from restlit.kernels.packed import packed_linears
from restlit.kernels.sdpa import GROUPED_SDPA
from restlit.rollout.base import SamplingConfig, eos_ids

__all__ = ["EngineGenerator", "Feed", "PrefixCacheGenerator", "common_prefix", "serve_in_rounds"]

# ``feed(slot, answer)``: a slot's next conversation after ``answer`` (None: the slot's first), or
# None when the slot has no more work; what :meth:`PrefixCacheGenerator.serve` asks for.
Feed = Callable[[int, "str | ContextOverflow | None"], "Sequence[Mapping[str, str]] | None"]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the longest common prefix of two id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _budget(ids: Sequence[int], max_new_tokens: int, max_context: int | None) -> int:
    """New tokens a prompt of ``ids`` may get: ``max_new_tokens``, cut at the context's end;
    raises :class:`ContextOverflow` when the prompt leaves no room."""
    if max_context is None:
        return max_new_tokens
    if len(ids) >= max_context:
        raise ContextOverflow(f"prompt of {len(ids)} tokens for a context of {max_context}")
    return min(max_new_tokens, max_context - len(ids))


@dataclass
class _Row:
    """One conversation of a :meth:`PrefixCacheGenerator.many` or ``serve`` call while it decodes."""

    index: int
    slot: Hashable
    cache: Any
    fed: list[int]  # the ids the cache holds
    budget: int
    token: int  # the next token, not yet fed
    generated: list[int] = field(default_factory=list)
    done: bool = False


class PrefixCacheGenerator:
    """``generator(messages) -> text``: greedy completions of chat messages by ``model``;
    ``generator.many(conversations, slots)`` answers several conversations together and
    ``generator.serve(width, feed)`` keeps ``width`` of them decoding (continuous batching).

    ``max_context``: positions the model may use (default: the config's
    ``max_position_embeddings``); ``reuse``: keep each slot's KV cache between calls (call
    :meth:`reset` between unrelated conversations; it is also safe not to, the common prefix is
    then the shared system prompt at most); ``rows``: the conversations decoded together at most
    (the packing hint of :meth:`packed`). ``encoded`` counts the prompt tokens actually run
    through the model. Decoding several rows in one forward needs restlit's attention (what
    :mod:`restlit.models` loads); on another attention implementation the rows decode one by one.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int = 512, max_context: int | None = None,
                 reuse: bool = True, rows: int = 1):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.max_context = max_context or getattr(model.config, "max_position_embeddings", None)
        self.reuse = reuse
        self.rows = max(1, int(rows))
        self.batched = getattr(model.config, "_attn_implementation", None) == GROUPED_SDPA
        self.eos = set(eos_ids(model, tokenizer))
        self.encoded = 0
        self.reset()

    @contextmanager
    def packed(self) -> Iterator[None]:
        """Calls within the block run on the model's linear weights packed once for the ``rows``
        this generator decodes (:mod:`restlit.packed`; packing at every call would repeat ~0.3 s
        per step): wrap a whole run of conversations in it."""
        with torch.no_grad(), packed_linears(self.model, rows=self.rows):
            yield

    def reset(self, slot: Hashable | None = None) -> None:
        """Forget one slot's cache (a new conversation there), or every slot's."""
        if slot is None:
            self._slots: dict[Hashable, tuple[Any, list[int]]] = {}
        else:
            self._slots.pop(slot, None)

    def cache(self, slot: Hashable = 0) -> Any:
        """The cache a slot keeps (None when it keeps none)."""
        return self._slots.get(slot, (None, []))[0]

    def __call__(self, messages: Sequence[Mapping[str, str]]) -> str:
        (text,) = self.many([messages])
        if isinstance(text, ContextOverflow):
            raise text
        return text

    @torch.no_grad()
    def many(self, conversations: Sequence[Sequence[Mapping[str, str]]],
             slots: Sequence[Hashable] | None = None) -> list[str | ContextOverflow]:
        """The next answer of each conversation (slots ``0 .. n-1`` unless given; each slot keeps
        its conversation's cache for its next call), or a :class:`ContextOverflow` in place of a
        conversation whose prompt no longer fits (its slot is forgotten)."""
        slots = list(range(len(conversations))) if slots is None else list(slots)
        out: list[str | ContextOverflow] = [ContextOverflow("not generated")] * len(conversations)
        rows: list[_Row] = []
        for index, (slot, messages) in enumerate(zip(slots, conversations)):
            row = self._start(index, slot, messages)
            if isinstance(row, ContextOverflow):
                out[index] = row
            else:
                rows.append(row)
        while active := [row for row in rows if not row.done]:
            self._step(active)
        for row in rows:
            out[row.index] = self._finish(row)
        return out

    @torch.no_grad()
    def serve(self, width: int, feed: Feed) -> None:
        """Continuous batching over slots ``0 .. width-1``: ``feed(slot, None)`` gives a slot's
        first conversation and, after each answer, ``feed(slot, answer)`` (a text, or the
        :class:`ContextOverflow` of a prompt that did not fit) its next one, or None to leave the
        slot idle. The running rows decode in one forward per step; a row that ends is answered at
        once and its slot's next conversation encoded (with ``reuse``, from the slot's cache), so
        no step waits for the slowest row of a round."""
        active: list[_Row] = []

        def begin(slot: int, answer: str | ContextOverflow | None) -> None:
            while (messages := feed(slot, answer)) is not None:
                row = self._start(slot, slot, messages)
                if isinstance(row, ContextOverflow):
                    answer = row
                elif row.done:
                    answer = self._finish(row)
                else:
                    active.append(row)
                    return
            self.reset(slot)  # idle for good: its cache is of no more use

        for slot in range(max(1, int(width))):
            begin(slot, None)
        while active:
            self._step(active)
            ended = [row for row in active if row.done]
            active[:] = [row for row in active if not row.done]
            for row in ended:
                begin(row.slot, self._finish(row))

    def answers(self, conversations: Sequence[Sequence[Mapping[str, str]]], width: int | None = None,
                done: Callable[[int], None] | None = None) -> list[str | ContextOverflow]:
        """The answers of independent conversations, in input order, ``width`` (default ``rows``)
        decoding together through :meth:`serve`: a finished conversation's place goes to the next
        at once. A prompt that does not fit gets a :class:`ContextOverflow`; ``done(index)`` is
        called as each conversation ends."""
        out: list[str | ContextOverflow] = [ContextOverflow("not generated")] * len(conversations)
        pending = iter(enumerate(conversations))
        current: dict[int, int] = {}

        def feed(slot: int, answer: str | ContextOverflow | None) -> Sequence[Mapping[str, str]] | None:
            if answer is not None:
                index = current.pop(slot)
                out[index] = answer
                if done is not None:
                    done(index)
            index, messages = next(pending, (None, None))
            if index is not None:
                current[slot] = index
            return messages

        self.serve(width or self.rows, feed)
        return out

    def _start(self, index: int, slot: Hashable, messages: Sequence[Mapping[str, str]]) -> _Row | ContextOverflow:
        """A conversation's row: its prompt encoded into the slot's cache and its first token, or
        the :class:`ContextOverflow` of a prompt that leaves no room (the slot is forgotten)."""
        ids = prompt_ids(self.tokenizer, messages)
        try:
            budget = _budget(ids, self.max_new_tokens, self.max_context)
        except ContextOverflow as overflow:
            self.reset(slot)
            return overflow
        cache, logits = self._extend(slot, ids, budget)
        token = int(logits.argmax())
        return _Row(index, slot, cache, list(ids), budget, token, [token], token in self.eos or budget <= 1)

    def _finish(self, row: _Row) -> str:
        """An ended row's text; with ``reuse`` its slot keeps the cache for the next call."""
        if self.reuse:
            self._slots[row.slot] = (row.cache, row.fed)
        return self.tokenizer.decode(row.generated, skip_special_tokens=True)

    def _extend(self, slot: Hashable, ids: list[int], budget: int) -> tuple[Any, torch.Tensor]:
        """Bring the slot's cache to ``ids``: crop it to the longest common prefix and encode the
        rest (everything, for a slot without a cache). Returns the cache and the next-token logits."""
        cache, cached = self._slots.pop(slot, (None, []))
        keep = 0
        if self.reuse and cache is not None:
            # at least one prompt token is run, for the next-token logits
            keep = min(common_prefix(cached, ids), len(ids) - 1)
        if keep == 0:
            cache = None
        elif len(cached) > keep:
            cache.crop(keep - len(cached))  # a negative count: drop that many positions
        self.encoded += len(ids) - keep
        out = self.model(input_ids=torch.tensor([ids[keep:]], device=self._device), past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        if cache is None:  # a fresh prefill: move it into buffers that are written in place
            preallocate(out.past_key_values, len(ids) + budget, growable=True)
        return out.past_key_values, out.logits[0, -1]

    def _step(self, active: list[_Row]) -> None:
        """One greedy step of the running rows: one forward for all of them (each on its own
        cache), or one per row when only one is left or the model cannot batch them."""
        together = (len(active) > 1 and self.batched
                    and all(type(layer) is PreallocatedLayer for row in active for layer in row.cache.layers))
        if not together:
            logits = [self.model(input_ids=torch.tensor([[row.token]], device=self._device),
                                 past_key_values=row.cache, use_cache=True).logits[0, -1] for row in active]
        else:
            cache = rows_cache([row.cache for row in active])
            out = self.model(input_ids=torch.tensor([[row.token] for row in active], device=self._device),
                             position_ids=torch.tensor([[len(row.fed)] for row in active], device=self._device),
                             past_key_values=cache, use_cache=True, **{ROWS: cache})
            logits = list(out.logits[:, -1])
        for row, logit in zip(active, logits):
            row.fed.append(row.token)
            row.token = int(logit.argmax())
            row.generated.append(row.token)
            row.done = row.token in self.eos or len(row.generated) >= row.budget

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


class EngineGenerator:
    """:class:`PrefixCacheGenerator`'s interface over a rollout engine (``restlit.rollout``; the
    vLLM engine for ``restlit eval --engine vllm``): each round's conversations go to the engine
    in one greedy ``generate`` call (one per distinct length budget), and the engine keeps what it
    keeps (vLLM: its prefix cache). ``max_context`` is the engine's ``max_model_len``; slots
    only name the conversations."""

    def __init__(self, engine: Any, tokenizer: Any, *, max_new_tokens: int, max_context: int):
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.max_context = max_context

    def many(self, conversations: Sequence[Sequence[Mapping[str, str]]],
             slots: Sequence[Hashable] | None = None) -> list[str | ContextOverflow]:
        """The next answer of each conversation, or a :class:`ContextOverflow` in its place."""
        out: list[str | ContextOverflow] = [ContextOverflow("not generated")] * len(conversations)
        budgets: dict[int, list[tuple[int, list[int]]]] = {}
        for index, messages in enumerate(conversations):
            ids = prompt_ids(self.tokenizer, messages)
            try:
                budgets.setdefault(_budget(ids, self.max_new_tokens, self.max_context), []).append((index, ids))
            except ContextOverflow as overflow:
                out[index] = overflow
        for budget, rows in budgets.items():
            sampling = SamplingConfig(n=1, max_new_tokens=budget, temperature=0.0, seed=0)
            groups = self.engine.generate([ids for _, ids in rows], sampling)
            for (index, _), group in zip(rows, groups):
                out[index] = group[0].text
        return out

    def serve(self, width: int, feed: Feed) -> None:
        """:meth:`PrefixCacheGenerator.serve`'s protocol in rounds (:func:`serve_in_rounds`)."""
        serve_in_rounds(self.many, width, feed)


def serve_in_rounds(many: Callable[..., list[str | ContextOverflow]], width: int, feed: Feed) -> None:
    """The ``serve(width, feed)`` protocol in rounds: each round, every busy slot's conversation
    goes to ``many(conversations, slots)`` in one call, then each slot is fed its answer. What
    :class:`EngineGenerator` does; on :class:`PrefixCacheGenerator` it is the baseline that
    :meth:`PrefixCacheGenerator.serve`'s continuous batching improves on (``benchmarks/bench_eval.py``)."""
    pending = {slot: m for slot in range(max(1, int(width))) if (m := feed(slot, None)) is not None}
    while pending:
        slots = sorted(pending)
        texts = many([pending[slot] for slot in slots], slots)
        pending = {slot: m for slot, text in zip(slots, texts) if (m := feed(slot, text)) is not None}
