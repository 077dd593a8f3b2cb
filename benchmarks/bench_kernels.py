"""The two kernels of a ResT step on workload W, each old path vs new path side by side, against
this machine's limits measured in the same run.

W (as ``bench_step.py``): SmolLM2-135M-Instruct, float32, the first 4 prompts that restlit's data
module serves from ``benchmarks/data/toolrl_240.json``, 4 completions per prompt, 128 new tokens.

- **update attention**: one packed prompt group forward + backward with gradient checkpointing
  (what the update runs per group), 4 groups of 4 completions x 128 tokens: the dense ``L x L``
  block mask (transformers' ``sdpa``) vs restlit's block-sparse attention (``restlit.attention``).
- **rollout**: ``HFEngine.generate`` of the 16 completions, same seeds (all paths draw the same
  samples, tested in ``tests/test_attention.py``), both on restlit's attention: prompts left-padded
  and the cache repeated per completion (``HFEngine(cascade=False)``, the engine before cascade
  decoding, with its grouped-query decoding step, and plain weights) vs cascade decoding, with
  plain weights and with the linear layers on oneDNN-packed weights (``restlit.packed``, what
  ``HFEngine`` does by default on a CPU; same samples, log-probs within 1e-4, tested in
  ``tests/test_packed.py``), and with the decoding step written out as a loop over the layers on
  fused, packed projections (``restlit.kernels.decoding.FusedDecoder``, what ``HFEngine`` now runs for a
  Llama-family model in float32; same samples, tested in ``tests/test_decoding.py``); a torch
  profile of that path's decoding steps says where a step goes. Decode ms per
  step is the generation time less the prefill, over the decoding steps; its bound is the bytes a
  step must read (every weight once, plus the keys and values as stored) over the measured memory
  bandwidth.
- **machine**: float32 matmul GFLOP/s (2048^3, best of 5) and memory bandwidth (a 256 MiB copy,
  read + write, best of 5), at the same thread count.

    python -m benchmarks.bench_kernels [--threads 2] [--repeats 2]

``--decode-attention`` times only the attention of one decoding row against its own cache
(SmolLM2-135M's 9 query heads on 3 key/value heads of 64, float32, cache lengths 1k-4.4k, the
cache a view into a larger preallocated buffer as ``restlit.kvcache`` keeps it): torch's
``scaled_dot_product_attention`` with ``enable_gqa`` (what transformers' ``sdpa`` runs) vs the 3
query heads of each key/value head folded into the query axis
(``restlit.kernels.sdpa.grouped_sdpa_forward``), as GB/s of keys and values read.

    python -m benchmarks.bench_kernels --decode-attention
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quickstart-cpu.yaml"
WORKLOAD_DATA = ROOT / "benchmarks" / "data" / "toolrl_240.json"


def machine_limits(torch) -> tuple[float, float]:
    """(fp32 matmul GFLOP/s, memory GB/s), best of 5 each."""
    a = torch.randn(2048, 2048)
    b = torch.randn(2048, 2048)
    best = min(_timed(lambda: a @ b) for _ in range(5))
    gflops = 2 * 2048**3 / best / 1e9
    src = torch.empty(64 * 2**20)  # 256 MiB of float32
    dst = torch.empty_like(src)
    src.fill_(1.0)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(5))
    return gflops, 2 * src.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def workload_prompts(count: int) -> tuple[object, object, list[list[int]]]:
    from restlit.config import load_config
    from restlit.training.data import ToolUseDataModule
    from restlit.training.run import build_tokenizer_and_policy

    config = load_config(CONFIG, [f"data.raw=[{WORKLOAD_DATA}]", f"trainer.prompts_per_step={count}",
                                  "output_dir=/tmp/restlit-bench-kernels"])
    tokenizer, policy = build_tokenizer_and_policy(config)
    data = ToolUseDataModule(config.data, tokenizer, prompts_per_step=count)
    data.prepare_data()
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    return tokenizer, policy, [list(item.prompt_ids) for item in batch]


def decode_attention(threads: int) -> None:
    """The ``--decode-attention`` table (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from benchmarks._results import markdown_table, record

    torch.set_num_threads(threads)
    rows = []
    for length in (1000, 2000, 3000, 4400):
        buffer_k, buffer_v = torch.randn(2, 1, 3, 8192, 64).unbind(0)
        keys, values = buffer_k[:, :, :length], buffer_v[:, :, :length]
        query = torch.randn(1, 9, 1, 64)
        folded = query.reshape(1, 3, 3, 64)
        paths = {"enable_gqa": functools.partial(F.scaled_dot_product_attention, query, keys, values, scale=0.125,
                                                 enable_gqa=True),
                 "folded": functools.partial(F.scaled_dot_product_attention, folded, keys, values, scale=0.125)}
        torch.testing.assert_close(paths["folded"]().reshape(1, 9, 1, 64), paths["enable_gqa"](), rtol=1e-5, atol=1e-5)
        ms = {}
        for name, fn in paths.items():
            for _ in range(20):
                fn()
            t0 = time.perf_counter()
            for _ in range(300):
                fn()
            ms[name] = (time.perf_counter() - t0) / 300 * 1e3
        read = 2 * keys.numel() * 4 / 1e9
        rows.append([length, *(f"{ms[n]:.3f} ms ({read / ms[n] * 1e3:.1f} GB/s)" for n in paths),
                     f"{ms['enable_gqa'] / ms['folded']:.2f}x"])
        print(rows[-1], flush=True)
    table = markdown_table(["cache positions", "enable_gqa (transformers' sdpa)", "folded (restlit)", "speed-up"], rows)
    print(table)
    record("bench_kernels_decode_attention", "Decode attention of one row on its own cache: enable_gqa vs folded",
           f"SmolLM2-135M's shapes (9 query heads, 3 key/value heads of 64), float32, {threads} threads, the cache a "
           f"view into an 8,192-position buffer; mean of 300 calls after 20 warm-up calls; GB/s of keys and values "
           f"read.\n\n{table}", f"python -m benchmarks.bench_kernels --decode-attention --threads {threads}")


def decode_profile(engine, prompts, sampling, steps: int = 24) -> str:
    """Where a decoding step of ``engine`` goes: torch's profiler over a generation of ``steps``
    tokens less one of a single token (the prefill and first sample), self time per operator; each
    generation runs once unprofiled first, so neither pays a first call's costs."""
    import dataclasses

    from torch.profiler import ProfilerActivity, profile

    def self_ms(new_tokens: int) -> tuple[dict[str, float], float]:
        run = dataclasses.replace(sampling, max_new_tokens=new_tokens)
        engine.generate(prompts, run)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            groups = engine.generate(prompts, run)
            wall = time.perf_counter() - start
        assert max(len(c.token_ids) for g in groups for c in g) == new_tokens  # no early stop: steps as counted
        return {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}, wall * 1e3

    short, short_wall = self_ms(1)
    long, long_wall = self_ms(steps)
    per_step = {k: (v - short.get(k, 0.0)) / (steps - 1) for k, v in long.items()}
    total = sum(v for v in per_step.values() if v > 0)
    top = sorted(per_step.items(), key=lambda kv: -kv[1])[:8]
    parts = ", ".join(f"`{k}` {v:.1f}" for k, v in top)
    return (f"Where a decoding step of the fused path goes (torch profiler, a generation of {steps} tokens less one "
            f"of 1 token, so the prefill cancels, each after an unprofiled run; ms per step, with the profiler's own "
            f"overhead): wall {(long_wall - short_wall) / (steps - 1):.0f}, operators' self time {total:.0f}, of which "
            f"{parts}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--decode-attention", action="store_true", help="time only the decode attention kernels")
    args = parser.parse_args()
    if args.decode_attention:
        decode_attention(args.threads)
        return

    import torch

    torch.set_num_threads(args.threads)
    from benchmarks._results import markdown_table, record
    from restlit.kernels.grouping import group_hidden
    from restlit.kernels.sdpa import GROUPED_SDPA
    from restlit.rollout.base import SamplingConfig
    from restlit.rollout.hf import HFEngine

    gflops, bandwidth = machine_limits(torch)
    tokenizer, policy, prompts = workload_prompts(args.prompts)
    gen = torch.Generator().manual_seed(0)
    completions = [torch.randint(5, 40000, (args.generations, args.max_new_tokens), generator=gen) for _ in prompts]
    # path -> (attention implementation, packed weights in the rollout, fused decoding step)
    variants = {"before: dense mask / padded cache": ("sdpa", False, False),
                "block-sparse / cascade": (GROUPED_SDPA, False, False),
                "block-sparse / cascade, packed weights": (GROUPED_SDPA, True, False),
                "now: block-sparse / cascade, fused step on packed weights": (GROUPED_SDPA, True, True)}
    implementations = list(dict.fromkeys(impl for impl, _, _ in variants.values()))

    # update: packed group forward + backward, checkpointed, every group of the step
    policy.train()
    policy.gradient_checkpointing_enable()
    # (packing applies only without gradients: the update is the same on both cascade paths)
    update: dict[str, float] = {impl: float("inf") for impl in implementations}
    for _ in range(args.repeats):
        for impl in implementations:
            policy.set_attn_implementation(impl)
            start = time.perf_counter()
            for prompt, tokens in zip(prompts, completions, strict=True):
                hidden = group_hidden(policy, torch.as_tensor(prompt), tokens)
                hidden.square().mean().backward()
            update[impl] = min(update[impl], time.perf_counter() - start)
            policy.zero_grad(set_to_none=True)
    policy.gradient_checkpointing_disable()

    # rollout: same seeds, same samples on both paths
    policy.eval()
    policy.set_attn_implementation(GROUPED_SDPA)
    engines = {name: HFEngine(policy, tokenizer, prompt_batch_size=args.prompts, cascade=impl == GROUPED_SDPA,
                              packed=packed, fused=fused)
               for name, (impl, packed, fused) in variants.items()}
    sampling = SamplingConfig(n=args.generations, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=7)
    one = SamplingConfig(n=args.generations, max_new_tokens=1, temperature=1.0, seed=7)
    rollout: dict[str, tuple[float, float, int, int]] = {}
    for _ in range(args.repeats):
        for name, engine in engines.items():
            prefill = _timed(lambda engine=engine: engine.generate(prompts, one))
            start = time.perf_counter()
            groups = engine.generate(prompts, sampling)
            total = time.perf_counter() - start
            steps = max(len(c.token_ids) for g in groups for c in g)
            tokens = sum(len(c.token_ids) for g in groups for c in g)
            if name not in rollout or total < rollout[name][1]:
                rollout[name] = (prefill, total, steps, tokens)

    params = sum(p.numel() * p.element_size() for p in policy.parameters())
    cfg = policy.config
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    prompt_tokens = sum(len(p) for p in prompts)
    rows = args.prompts * args.generations
    mean_new = args.max_new_tokens / 2
    kv_cascade = kv_per_token * (prompt_tokens + rows * mean_new)
    kv_padded = kv_per_token * rows * (max(len(p) for p in prompts) + mean_new)
    bound_ms = {name: 1e3 * (params + (kv_cascade if impl == GROUPED_SDPA else kv_padded)) / (bandwidth * 1e9)
                for name, (impl, _, _) in variants.items()}
    profile = decode_profile(engines[list(variants)[-1]], prompts, sampling)

    table = []
    for name, (impl, _, _) in variants.items():
        prefill, total, steps, tokens = rollout[name]
        decode_ms = 1e3 * (total - prefill) / max(steps - 1, 1)
        table.append([name, f"{update[impl]:.2f}", f"{prefill:.2f}", f"{total:.2f}", f"{tokens / total:.0f}",
                      f"{decode_ms:.0f}", f"{bound_ms[name]:.0f}", f"{decode_ms / bound_ms[name]:.1f}x"])
    old, new = update["sdpa"], update[GROUPED_SDPA]
    old_total, unpacked_total, packed_total, new_total = (rollout[name][1] for name in variants)
    headers = ["path", "update: 4 group fwd+bwd s", "prefill s", "rollout s", "tokens/s", "decode ms/step",
               "decode bound ms", "decode / bound"]
    body = (markdown_table(headers, table) + "\n\n"
            f"Machine, measured in this run at {args.threads} threads: fp32 matmul {gflops:.0f} GFLOP/s, memory "
            f"{bandwidth:.1f} GB/s. Update attention path: {old / new:.2f}x faster; rollout: {old_total / new_total:.2f}x "
            f"({old_total / unpacked_total:.2f}x from the cascade, {unpacked_total / packed_total:.2f}x more from packed "
            f"weights, `restlit.packed`, {packed_total / new_total:.2f}x more from the fused step, `restlit.decoding`; "
            f"both apply only without gradients, so the update is the same). "
            f"W: {args.prompts} prompts ({prompt_tokens} prompt tokens) x {args.generations} completions x up to "
            f"{args.max_new_tokens} tokens; the decode bound counts the weights ({params / 2**20:.0f} MiB) once per step "
            f"plus the keys and values as each path stores them at the mean length ({mean_new:.0f} new tokens).\n\n"
            f"{profile}")
    print(body)
    record("bench_kernels", "Update attention and rollout decoding: old vs new path (issue 17)", body,
           f"python -m benchmarks.bench_kernels --threads {args.threads} --repeats {args.repeats}")


if __name__ == "__main__":
    main()
