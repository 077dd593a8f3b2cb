"""A rollout engine on transformers models, colocated with the policy being trained.

Every prompt is shared by its ``n`` completions, and tool-use prompts (the tool list) are about ten
times longer than the completions. So the engine prefills each prompt once and decodes its ``n``
completions together: the prefill costs ``B x P`` tokens instead of the ``B x n x P`` of
``generate(num_return_sequences=n)``.

On restlit's attention (``restlit.kernels.sdpa.GROUPED_SDPA``, what ``restlit.models`` loads) decoding
is a *cascade*: each prompt is prefilled alone, at its own length (no left padding), and its keys
and values are kept ONCE per layer (:class:`_CascadeLayer`); the completions' own positions go into
a buffer preallocated for ``max_new_tokens``, and each step attends both parts and combines them
by log-sum-exp (:func:`restlit.kernels.attention.cascade_decode_attention`), so a prompt's cache is read
once per step, not ``n`` times, and never copied. On a CPU the decoding steps of a Llama-family
model in float32 run as one written-out loop over its layers (:class:`restlit.kernels.decoding.FusedDecoder`:
fused query/key/value and gate/up projections on oneDNN-packed weights, without transformers'
per-module plumbing), built at each ``generate``; other models' steps, and the padded path,
multiply by oneDNN-packed copies of their linear weights (:mod:`restlit.packed`: a decoding step's
small matrix products otherwise repack every weight at every call). The prefill runs on the
weights as they are where the fused decoder applies. A policy with LoRA adapters (``peft``) decodes
on its current adapters: each LoRA layer is packed on its merged weight ``W + s B A``, computed
into the packed copy (never merged into ``W`` in place, which would not restore ``W`` bit for
bit), so both paths apply and the prefill runs through the LoRA layers as they are. After each ``generate`` the freed caches
and packed weights go back to the system (:mod:`restlit.memory`).

Other attention implementations (eager, flash attention) and special cache layers (sliding
windows) take the padded path: prompts left-padded into one batch, the cache repeated ``n`` times
into one buffer allocated for the whole generation (:class:`restlit.kernels.kvcache.PreallocatedLayer`:
transformers' ``DynamicCache`` concatenates, i.e. copies the whole cache at every step and every
layer, and fragments the heap.)

Decoding is a plain loop over the model's forward with explicit position ids, temperature and
nucleus (top-p) sampling, EOS and stop strings per sequence. Sampling is the Gumbel-max trick with
one seeded ``torch.Generator`` per sequence (``argmax(z / T + g)`` with ``g ~ Gumbel`` draws exactly
from ``softmax(z / T)``), so each sequence's randomness depends only on its prompt's seed, not on
the batch it shares or the global RNG; both paths draw the same samples (tested). The log-prob and
entropy reported per token are those of the temperature-scaled distribution (before top-p
truncation), the quantities the trainer computes; they come free with the logits, so the trainer
gets the step's region entropies without another forward pass.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer

from restlit.kernels import memory
from restlit.kernels.attention import CASCADE
from restlit.kernels.decoding import FusedDecoder
from restlit.kernels.kvcache import PreallocatedLayer, preallocate
from restlit.kernels.packed import packed_linears
from restlit.kernels.sdpa import GROUPED_SDPA
from restlit.rollout.base import Completion, SamplingConfig, eos_ids, transformers_model


class _CascadeLayer(DynamicLayer):
    """One layer's cache for cascade decoding: each prompt's keys and values ONCE
    (``prompt_keys`` / ``prompt_values`` ``[B, kv, P, D]``, right-padded, ``prompt_bias`` 0 or
    ``-inf``), and the ``B x repeats`` completions' own positions in a buffer of ``capacity``.
    ``update`` writes the new positions in place and returns views of the completions' part only;
    :func:`restlit.kernels.attention.cascade_decode_attention` combines it with the prompt part. Built from
    one prefilled ``DynamicLayer`` per prompt, each at its own length (no left padding)."""

    def __init__(self, prefilled: Sequence[DynamicLayer], repeats: int, capacity: int):
        super().__init__()
        first = prefilled[0].keys
        b, kv, dim = len(prefilled), first.shape[1], first.shape[-1]
        width = max(layer.keys.shape[2] for layer in prefilled)
        self.prompt_keys = first.new_zeros(b, kv, width, dim)
        self.prompt_values = first.new_zeros(b, kv, width, prefilled[0].values.shape[-1])
        self.prompt_bias = torch.zeros(b, 1, 1, width, dtype=torch.float32, device=first.device)
        for i, layer in enumerate(prefilled):
            length = layer.keys.shape[2]
            self.prompt_keys[i, :, :length] = layer.keys[0]
            self.prompt_values[i, :, :length] = layer.values[0]
            self.prompt_bias[i, ..., length:] = float("-inf")
        self._keys = first.new_empty(b * repeats, kv, capacity, dim)
        self._values = first.new_empty(b * repeats, kv, capacity, self.prompt_values.shape[-1])
        self.dtype, self.device = first.dtype, first.device
        self.is_initialized, self.growable = True, False
        self._set_length(0)

    _set_length = PreallocatedLayer._set_length
    capacity = PreallocatedLayer.capacity
    update = PreallocatedLayer.update


class HFEngine:
    """Samples from a transformers causal LM. ``prompt_batch_size`` prompts are decoded together
    (each expanded to ``n`` sequences); lower it to bound memory. ``cascade=False`` forces the
    padded path even on restlit's attention; ``packed=False`` multiplies by the weights as they are
    instead of oneDNN-packed copies (:mod:`restlit.packed`); ``fused=False`` decodes through the
    model's forward instead of :class:`restlit.kernels.decoding.FusedDecoder` (the benchmarks compare
    them)."""

    def __init__(self, model: Any, tokenizer: Any, prompt_batch_size: int = 4, cascade: bool = True,
                 packed: bool = True, fused: bool = True):
        self.model = transformers_model(model)
        self.cascade = cascade
        self.packed = packed
        self.fused = fused
        self.tokenizer = tokenizer
        self.prompt_batch_size = max(1, int(prompt_batch_size))
        self.eos_ids = eos_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]

    def sync_weights(self, model: Any) -> None:
        """Colocated engine: it samples from the very module being trained, so there is nothing to
        copy; only the reference is updated."""
        self.model = transformers_model(model)

    def close(self) -> None:
        """Nothing to give back: the engine holds no memory of its own between calls."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig) -> list[list[Completion]]:
        device = next(self.model.parameters()).device
        # unseeded: fresh OS randomness, without reseeding the global torch RNG
        base = sampling.seed if sampling.seed is not None else secrets.randbits(62)
        was_training = self.model.training
        self.model.eval()
        rows = min(len(prompts), self.prompt_batch_size) * sampling.n
        try:
            return self._generate_packed(prompts, sampling, base, device, rows)
        finally:
            self.model.train(was_training)
            memory.release()  # the caches and packed weights just freed go back to the system

    def _generate_packed(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, base: int,
                         device: torch.device, rows: int) -> list[list[Completion]]:
        """:meth:`_generate_all` with the fused decoder or the packed linear layers, whichever
        applies; both copies of the weights are freed when this returns, before ``generate`` hands
        the freed memory back."""
        decoder = FusedDecoder.build(self.model, rows) if self.fused and self.packed and self._cascades() else None
        with packed_linears(self.model, rows) if self.packed and decoder is None else nullcontext():
            return self._generate_all(prompts, sampling, base, device, decoder)

    def _cascades(self) -> bool:
        return self.cascade and getattr(self.model.config, "_attn_implementation", None) == GROUPED_SDPA

    def _generate_all(self, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, base: int,
                      device: torch.device, decoder: FusedDecoder | None) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        for start in range(0, len(prompts), self.prompt_batch_size):
            chunk = prompts[start : start + self.prompt_batch_size]
            generators = []
            for i in range(len(chunk)):
                for j in range(sampling.n):
                    g = torch.Generator(device=device)
                    g.manual_seed(((base + start + i) * 1_000_003 + j) % (2**63 - 1))
                    generators.append(g)
            out.extend(self._generate_chunk(chunk, start, sampling, generators, device, decoder))
        return out

    def _generate_chunk(
        self, prompts: Sequence[Sequence[int]], offset: int, sampling: SamplingConfig,
        generators: list[torch.Generator], device: torch.device, decoder: FusedDecoder | None,
    ) -> list[list[Completion]]:
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt: every prompt needs at least one token")
        n, b = sampling.n, len(prompts)
        cascade = None
        if self._cascades():
            cascade = self._prefill_cascade(prompts, n, sampling.max_new_tokens, device)
        if cascade is not None:
            (cache, logits, position), mask, step_kwargs = cascade, None, {CASCADE: cascade[0]}
        else:
            cache, logits, position, mask = self._prefill_padded(prompts, n, sampling.max_new_tokens, device)
            step_kwargs, decoder = {}, None  # a cache the decoder does not know (padded, sliding windows)

        rows = b * n
        eos = torch.as_tensor(self.eos_ids, device=device)
        tokens = torch.empty((rows, sampling.max_new_tokens), dtype=torch.long, device=device)
        logps = torch.zeros((rows, sampling.max_new_tokens), dtype=torch.float32, device=device)
        entropies = torch.zeros_like(logps)
        done = torch.zeros(rows, dtype=torch.bool, device=device)
        stopped = torch.zeros(rows, dtype=torch.bool, device=device)  # by EOS or a stop string
        lengths = torch.zeros(rows, dtype=torch.long, device=device)
        stop_window = max((len(s) for s in sampling.stop), default=0) + 8

        for t in range(sampling.max_new_tokens):
            token, logp, entropy = self._sample(logits, sampling, generators)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            tokens[:, t] = token
            logps[:, t] = torch.where(done, torch.zeros_like(logp), logp)
            entropies[:, t] = torch.where(done, torch.zeros_like(entropy), entropy)
            lengths += (~done).long()
            hit = torch.isin(token, eos) & ~done
            if sampling.stop:
                hit |= self._stop_string_hit(tokens[:, : t + 1], lengths, done, stop_window, sampling.stop)
            stopped |= hit
            done |= hit
            if bool(done.all()) or t + 1 == sampling.max_new_tokens:
                break
            if mask is not None:
                mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=1)
            position = position + 1
            if decoder is not None:
                logits = decoder(token, position, cache)
            else:
                out = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=position[:, None],
                                 past_key_values=cache, use_cache=True, **step_kwargs)
                cache = out.past_key_values
                logits = out.logits[:, -1, :].float()

        tokens, logps, entropies = tokens.cpu(), logps.cpu(), entropies.cpu()
        lengths, stopped = lengths.tolist(), stopped.tolist()
        groups: list[list[Completion]] = []
        for i in range(b):
            group = []
            for r in range(i * n, (i + 1) * n):
                tok = tokens[r, : lengths[r]].tolist()
                group.append(Completion(
                    prompt_index=offset + i,
                    token_ids=tok,
                    text=self.tokenizer.decode(tok, skip_special_tokens=True),
                    finish_reason="stop" if stopped[r] else "length",
                    logprobs=logps[r, : lengths[r]].tolist(),
                    entropies=entropies[r, : lengths[r]].tolist(),
                ))
            groups.append(group)
        return groups

    def _prefill_cascade(self, prompts: Sequence[Sequence[int]], n: int, new_tokens: int, device: torch.device):
        """Each prompt prefilled at its own length, its cache kept once for its ``n`` completions
        (:class:`_CascadeLayer`). Returns the cache, the first logits and positions per row, or
        None for a model whose cache has special (e.g. sliding-window) layers."""
        caches, logits = [], []
        for p in prompts:
            ids = torch.as_tensor([list(p)], dtype=torch.long, device=device)
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            if not all(type(layer) is DynamicLayer for layer in out.past_key_values.layers):
                return None
            caches.append(out.past_key_values)
            logits.append(out.logits[0, -1].float())
        cache = caches[0]
        cache.layers = [_CascadeLayer([c.layers[i] for c in caches], n, new_tokens)
                        for i in range(len(cache.layers))]
        position = torch.as_tensor([len(p) - 1 for p in prompts], device=device).repeat_interleave(n)
        return cache, torch.stack(logits).repeat_interleave(n, 0), position

    def _prefill_padded(self, prompts: Sequence[Sequence[int]], n: int, new_tokens: int, device: torch.device):
        """The prompts left-padded into one batch (attention implementations other than restlit's),
        the cache repeated ``n`` times into a preallocated buffer. Returns the cache, the first
        logits, positions and the attention mask per row."""
        b, width = len(prompts), max(len(p) for p in prompts)
        ids = torch.full((b, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.as_tensor(list(p), dtype=torch.long)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        # sliding-window or other special layers keep transformers' own (copying) cache
        if not preallocate(cache, width + new_tokens, repeats=n) and n > 1:
            cache.batch_repeat_interleave(n)
        logits = out.logits[:, -1, :].float().repeat_interleave(n, 0)
        return cache, logits, positions[:, -1].repeat_interleave(n, 0), mask.repeat_interleave(n, 0)

    @staticmethod
    def _sample(logits: torch.Tensor, sampling: SamplingConfig, generators: list[torch.Generator]):
        """(token, its log-prob, the entropy) per row; greedy when ``temperature <= 0``."""
        greedy = sampling.temperature <= 0
        scaled = logits if greedy else logits / sampling.temperature
        logp_all = torch.log_softmax(scaled, -1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        if greedy:
            token = logits.argmax(-1)
        else:
            keyed = logp_all
            if sampling.top_p < 1.0:
                sorted_lp, order = logp_all.sort(-1, descending=True)
                # keep the smallest prefix whose mass reaches top_p (always at least the top token)
                mass_before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()
                drop = torch.zeros_like(logp_all, dtype=torch.bool).scatter(-1, order, mass_before >= sampling.top_p)
                keyed = logp_all.masked_fill(drop, float("-inf"))
            u = torch.stack([torch.rand(logits.shape[-1], generator=g, device=logits.device) for g in generators])
            gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
            token = (keyed + gumbel).argmax(-1)
        return token, logp_all.gather(-1, token[:, None]).squeeze(-1), entropy

    def _stop_string_hit(self, tokens, lengths, done, window: int, stops: list[str]) -> torch.Tensor:
        hit = torch.zeros_like(done)
        for r in (~done).nonzero().flatten().tolist():
            length = int(lengths[r])
            tail = self.tokenizer.decode(tokens[r, max(0, length - window) : length].tolist(), skip_special_tokens=True)
            if any(s in tail for s in stops):
                hit[r] = True
        return hit
