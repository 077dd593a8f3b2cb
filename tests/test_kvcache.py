"""restlit.kernels.kvcache: the in-place cache holds what transformers' concatenating cache holds, through
updates, crops and growth, and greedy decoding through it gives the same tokens as no cache."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from restlit.kernels.kvcache import PreallocatedLayer, preallocate
from tests.conftest import REPO


def _states(b: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 2, length, 4, generator=g), torch.randn(b, 2, length, 4, generator=g)


def test_updates_crops_and_growth_match_the_dynamic_layer():
    reference, prefilled = DynamicLayer(), DynamicLayer()
    for layer in (reference, prefilled):
        layer.update(*_states(1, 5, 0))
    ours = PreallocatedLayer(prefilled, 1, 6, growable=True)
    assert ours.capacity == 6
    for seed, (length, crop) in enumerate([(1, 0), (3, -2), (1, 0), (7, -5), (2, 0)], 1):
        if crop:
            reference.crop(crop)
            ours.crop(crop)
        k, v = _states(1, length, seed)
        rk, rv = reference.update(k, v)
        ok, ov = ours.update(k, v)
        assert torch.equal(rk, ok) and torch.equal(rv, ov)
        assert ours.get_seq_length() == reference.get_seq_length()
    assert ours.capacity >= 12  # grew by doubling at least once
    ours.crop(3)  # a positive count is the length to keep, as DynamicLayer's legacy convention
    assert ours.get_seq_length() == 3


def test_a_full_fixed_buffer_raises_and_repeats_interleave_rows():
    prefilled = DynamicLayer()
    keys, values = _states(2, 3, 0)
    prefilled.update(keys, values)
    ours = PreallocatedLayer(prefilled, 3, 4)
    assert torch.equal(ours.keys, keys.repeat_interleave(3, 0))
    ours.update(*_states(6, 1, 1))
    with pytest.raises(RuntimeError, match="KV cache full"):
        ours.update(*_states(6, 1, 2))


def test_preallocate_leaves_special_layers_alone():
    class Sliding(DynamicLayer):
        pass

    cache = DynamicCache()
    cache.layers = [Sliding()]
    assert not preallocate(cache, 8)
    assert type(cache.layers[0]) is Sliding


def test_greedy_generation_through_the_growing_cache_matches_no_cache():
    from restlit.config import load_config
    from restlit.evaluation.session import PrefixCacheGenerator
    from restlit.training.run import build_tokenizer_and_policy

    tokenizer, policy = build_tokenizer_and_policy(load_config(REPO / "configs" / "tiny-test.yaml"))
    policy.eval()
    messages = [{"role": "system", "content": "You call tools."}, {"role": "user", "content": "list the files"}]
    generator = PrefixCacheGenerator(policy, tokenizer, max_new_tokens=12, max_context=1 << 16)
    first = generator(messages)
    assert all(type(layer) is PreallocatedLayer for layer in generator.cache(0).layers)
    # a second call extends the same conversation past the first buffer's capacity
    longer = [*messages, {"role": "assistant", "content": first}, {"role": "user", "content": "and again " * 30}]
    second = generator(longer)

    from restlit.tokens import prompt_ids

    def no_cache(msgs):
        ids = prompt_ids(tokenizer, msgs)
        out: list[int] = []
        with torch.no_grad():
            for _ in range(12):
                token = int(policy(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
                out.append(token)
                if token in generator.eos:
                    break
        return tokenizer.decode(out, skip_special_tokens=True)

    assert (first, second) == (no_cache(messages), no_cache(longer))


def test_rows_of_different_lengths_decode_together_as_each_alone():
    """One decoding step of three single-row caches (prompts of 5, 9 and 13 tokens) through
    ``rows_cache`` gives each row the logits it gets alone, and writes each row's new position
    into its own cache; the rows' contexts matter (a row fed another row's cache differs)."""
    import copy

    from restlit.config import load_config
    from restlit.kernels.attention import ROWS
    from restlit.kernels.kvcache import rows_cache
    from restlit.training.run import build_tokenizer_and_policy

    _, policy = build_tokenizer_and_policy(load_config(REPO / "configs" / "tiny-test.yaml"))
    policy.eval()
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, policy.config.vocab_size, (1, n), generator=gen) for n in (5, 9, 13)]
    token = torch.tensor([[7], [11], [13]])
    with torch.no_grad():
        caches = []
        for p in prompts:
            cache = policy(input_ids=p, use_cache=True).past_key_values
            preallocate(cache, 32)
            caches.append(cache)
        alone = [policy(input_ids=token[b : b + 1], past_key_values=copy.deepcopy(caches[b]),
                        use_cache=True).logits[0, -1] for b in range(3)]
        crossed = policy(input_ids=token[:1], past_key_values=copy.deepcopy(caches[2]), use_cache=True,
                         position_ids=torch.tensor([[5]])).logits[0, -1]
        cache = rows_cache(caches)
        together = policy(input_ids=token, position_ids=torch.tensor([[5], [9], [13]]), past_key_values=cache,
                          use_cache=True, **{ROWS: cache}).logits[:, -1]
    assert (crossed - alone[0]).abs().max() > 1e-3
    for b in range(3):
        torch.testing.assert_close(together[b], alone[b], rtol=1e-5, atol=1e-5)
    assert [c.layers[0].length for c in caches] == [6, 10, 14]
