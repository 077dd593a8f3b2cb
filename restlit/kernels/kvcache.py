"""A key/value cache layer that never copies itself: positions are written in place into a
buffer allocated ahead.

transformers' ``DynamicLayer`` concatenates at every ``update``: each decode step copies the whole
cache of every layer (at a multi-turn prompt of thousands of tokens, a large share of a decoding
step on a CPU) and fragments the heap. :class:`PreallocatedLayer`
holds a buffer of ``capacity`` positions; ``update`` writes the new positions after the filled
ones and returns *views* of the filled part, so attention reads exactly the values a
``DynamicLayer`` would hold. ``crop`` only moves the end; a write past the capacity either raises
(``growable=False``: the rollout engine sizes its buffer for the whole generation) or reallocates
to at least twice the capacity (``growable=True``: a conversation whose length is not known ahead,
e.g. :class:`restlit.evaluation.session.PrefixCacheGenerator`).

:func:`rows_cache` decodes several such single-row caches together, each at its own length (the
conversations of several multi-turn entries): a step's new key and value of row ``b`` go into cache
``b``'s own layer, and each row attends only its own cache (``restlit.kernels.sdpa.grouped_sdpa_forward``
with :data:`restlit.kernels.attention.ROWS`), so there is no padding, no mask and no copy of any cache;
the rows share the weights' read, which is what a decoding step at one row spends its time on.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

__all__ = ["PreallocatedLayer", "RowsLayer", "preallocate", "rows_cache"]


class PreallocatedLayer(DynamicLayer):
    """One layer's key/value cache in a buffer of ``capacity`` positions for ``B x repeats`` rows,
    initialised from a prefilled ``DynamicLayer`` of ``B`` rows (row ``i`` becomes rows
    ``i * repeats ... (i + 1) * repeats - 1``, as ``repeat_interleave``)."""

    def __init__(self, prefilled: DynamicLayer, repeats: int, capacity: int, *, growable: bool = False):
        super().__init__()
        keys, values = prefilled.keys, prefilled.values
        b, heads, length, _ = keys.shape
        capacity = max(capacity, length)
        self.growable = growable
        self._keys = keys.new_empty(b * repeats, heads, capacity, keys.shape[-1])
        self._values = values.new_empty(b * repeats, heads, capacity, values.shape[-1])
        self._keys.view(b, repeats, heads, capacity, -1)[:, :, :, :length] = keys[:, None]
        self._values.view(b, repeats, heads, capacity, -1)[:, :, :, :length] = values[:, None]
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._set_length(length)

    @property
    def capacity(self) -> int:
        return self._keys.shape[2]

    def _set_length(self, length: int) -> None:
        self.length = length
        self.keys = self._keys[:, :, :length]
        self.values = self._values[:, :, :length]

    def _grow(self, needed: int) -> None:
        capacity = max(needed, 2 * self.capacity)
        keys = self._keys.new_empty(*self._keys.shape[:2], capacity, self._keys.shape[-1])
        values = self._values.new_empty(*self._values.shape[:2], capacity, self._values.shape[-1])
        keys[:, :, : self.length] = self.keys
        values[:, :, : self.length] = self.values
        self._keys, self._values = keys, values
        self._set_length(self.length)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            if not self.growable:
                raise RuntimeError(f"KV cache full: {end} positions for a capacity of {self.capacity}")
            self._grow(end)
        self._keys[:, :, self.length : end] = key_states
        self._values[:, :, self.length : end] = value_states
        self._set_length(end)
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        """Keep the first ``length - |tokens_to_remove|`` positions (``DynamicLayer``'s convention:
        a negative count removes that many; a positive one is the length to keep)."""
        keep = tokens_to_remove if tokens_to_remove > 0 else self.length - abs(tokens_to_remove)
        self._set_length(max(0, min(keep, self.length)))


def preallocate(cache: Any, capacity: int, *, repeats: int = 1, growable: bool = False) -> bool:
    """Replace the layers of a prefilled transformers ``Cache`` by :class:`PreallocatedLayer` in
    place. Returns False, leaving the cache as it is, when a layer is not a plain
    ``DynamicLayer`` (sliding windows, quantised or offloaded caches)."""
    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        return False
    cache.layers = [PreallocatedLayer(layer, repeats, capacity, growable=growable) for layer in cache.layers]
    return True


class RowsLayer(DynamicLayer):
    """Layer ``i`` of several single-row caches decoded together (:func:`rows_cache`): ``update``
    writes row ``b``'s new positions into ``rows[b]`` and returns its inputs unchanged; the
    attention reads each row's keys and values from ``rows[b]`` itself."""

    def __init__(self, rows: list[DynamicLayer]):
        super().__init__()
        self.rows = rows
        self.dtype, self.device = rows[0].dtype, rows[0].device
        self.is_initialized = True
        self.keys = self.values = rows[0].keys[:, :, :0]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        for b, layer in enumerate(self.rows):
            layer.update(key_states[b : b + 1], value_states[b : b + 1])
        return key_states, value_states


def rows_cache(caches: list[Any]) -> Any:
    """One transformers cache over the single-row ``caches`` (plain or preallocated layers, the
    same number each) for a decoding step of ``len(caches)`` rows, row ``b`` on ``caches[b]``;
    pass it as ``past_key_values`` and as :data:`restlit.kernels.attention.ROWS`, with each row's
    position ids (the rows have different lengths)."""
    cache = DynamicCache()
    cache.layers = [RowsLayer([c.layers[i] for c in caches]) for i in range(len(caches[0].layers))]
    return cache
