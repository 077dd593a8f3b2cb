"""``restlit.rollout.hf``: the transformers engine against ``generate`` and a full forward, its
seeding, ``n`` and stop strings; ``restlit.rollout.build_engine``. (Both engines pass the shared
tests of ``tests/test_rollout.py``.)"""

from __future__ import annotations

import torch

from restlit.rollout.base import SamplingConfig


def test_engine_greedy_matches_generate_and_reports_logprobs(tiny_parts):
    from restlit.rollout.hf import HFEngine

    tok, model = tiny_parts
    prompts = [tok("hello there, how are you")["input_ids"], tok("a")["input_ids"]]
    groups = HFEngine(model, tok, prompt_batch_size=2).generate(prompts, SamplingConfig(n=2, max_new_tokens=10, temperature=0))
    for prompt, group in zip(prompts, groups):
        ref = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=10, pad_token_id=tok.eos_token_id)[0, len(prompt):].tolist()
        for comp in group:
            assert comp.token_ids == ref[: len(comp.token_ids)] and len(comp.token_ids) == 10
            assert comp.finish_reason == "length"
        for comp in group:  # every row of the expanded cache, against a full forward without cache
            full = torch.tensor([prompt + comp.token_ids])
            with torch.no_grad():
                lp = torch.log_softmax(model(full).logits[0, len(prompt) - 1 : -1].float(), -1)
            lp = lp.gather(-1, torch.tensor(comp.token_ids)[:, None]).squeeze(-1)
            assert torch.allclose(lp, torch.tensor(comp.logprobs), atol=2e-5)

def test_engine_seeding_is_per_prompt_and_respects_n_and_stop(tiny_parts):
    from restlit.rollout.hf import HFEngine

    tok, model = tiny_parts
    engine = HFEngine(model, tok)
    prompts = [tok("hello there")["input_ids"], tok("The weather in Paris is nice today")["input_ids"]]
    both = engine.generate(prompts, SamplingConfig(n=3, max_new_tokens=12, seed=5))
    again = engine.generate(prompts, SamplingConfig(n=3, max_new_tokens=12, seed=5))
    alone = engine.generate(prompts[1:], SamplingConfig(n=3, max_new_tokens=12, seed=6))
    assert [len(g) for g in both] == [3, 3]
    assert [c.token_ids for g in both for c in g] == [c.token_ids for g in again for c in g]
    assert [c.token_ids for c in both[1]] == [c.token_ids for c in alone[0]]  # batch-independent
    assert len({tuple(c.token_ids) for c in both[0]}) > 1
    other = engine.generate(prompts, SamplingConfig(n=3, max_new_tokens=12, seed=99))
    assert [c.token_ids for g in other for c in g] != [c.token_ids for g in both for c in g]
    stopped = engine.generate(prompts, SamplingConfig(n=4, max_new_tokens=40, seed=3, stop=["e"]))
    for comp in (c for g in stopped for c in g):
        assert ("e" in comp.text and comp.finish_reason == "stop") or (comp.finish_reason == "length" and "e" not in comp.text)
        assert len(comp.token_ids) <= 40 and len(comp.entropies) == len(comp.token_ids)


def test_build_engine_gives_the_configured_hf_engine(tiny_parts, tmp_path):
    from restlit.rollout import build_engine
    from restlit.rollout.hf import HFEngine
    from tests.training import tiny_config

    tok, model = tiny_parts
    engine = build_engine(tiny_config(tmp_path, "rollout.prompt_batch_size=3"), model, tok)
    assert isinstance(engine, HFEngine) and engine.model is model and engine.prompt_batch_size == 3
    assert engine.packed  # the default: packed weights while generating (restlit.kernels.packed)
    assert not build_engine(tiny_config(tmp_path, "rollout.pack_weights=false"), model, tok).packed
    assert engine.pad_id == tok.pad_token_id
    engine.close()  # the protocol's close: nothing to give back, and no error
