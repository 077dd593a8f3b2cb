"""The supervised warm start's step under each gradient-checkpointing mode, side by side.

The demo's SFT (``configs/quickstart-cpu.yaml``: SmolLM2-135M-Instruct, float32, batches of 2
prepared demo samples, 40 steps) is most of ``make demo``'s time. Each mode of
``restlit.checkpointing`` (full, selective, off) runs in its own child process, so that each peak
RSS (``ru_maxrss``) is its own: the same first ``--steps`` + 1 batches of the demo's training data,
in the same order, each step what ``SFTModule.training_step`` runs (``batch_loss`` with one backward
per sample, gradient clipping, AdamW) plus the heap release that ``restlit sft`` does after each
batch. The first step (allocator and kernel
warm-up) is not timed. A fourth row runs full checkpointing with one backward of the whole batch,
as ``restlit sft`` did before it took one backward per sample (same gradient, tested). With ``--rounds R`` the modes run R times, interleaved (full, selective, off,
full, ...), and each mode's fastest round is reported, its other rounds shown beside it: this
machine's speed drifts by 10-20% over minutes, which one sequential pass would read as a difference
between the modes. The loss of the first batch is printed per mode: the modes compute the same
thing.

    python -m benchmarks.bench_sft [--steps 6] [--rounds 2] [--threads 2] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quickstart-cpu.yaml"
MODES = {"full": True, "selective": "selective", "off": False}
BATCH = "full, one backward per batch"  # restlit sft before one backward per sample


def child(mode: str, steps: int, threads: int) -> dict:
    """Time ``steps`` SFT steps (after one untimed) under ``mode``; this process's figures."""
    import torch

    from restlit.config import load_config
    from restlit.kernels import memory
    from restlit.training import optim
    from restlit.training.data import ToolUseDataModule
    from restlit.training.run import build_tokenizer_and_policy
    from restlit.training.sft import SFTModule

    torch.set_num_threads(threads)
    memory.release_large_frees()
    config = load_config(CONFIG, [f"data.cache_dir={ROOT / 'runs' / 'cache'}"])
    per_sample = mode != BATCH
    tokenizer, policy = build_tokenizer_and_policy(config, MODES[mode] if per_sample else True)
    module = SFTModule(config, policy, tokenizer)
    size = config.sft.batch_size
    data = ToolUseDataModule(config.data, tokenizer, size)
    data.prepare_data()
    data.setup("fit")
    batches = [data.train_items[i * size : (i + 1) * size] for i in range(steps + 1)]
    optimizer = optim.build_optimizer(policy, config.optim, lr=config.sft.lr)
    policy.train()
    times, first_loss = [], None
    for batch in batches:
        start = time.perf_counter()
        if per_sample:
            loss, _ = module.batch_loss(batch, backward=torch.Tensor.backward)
        else:
            loss, _ = module.batch_loss(batch)
            loss.backward()
        optim.clip_gradients(policy, policy, config.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        memory.release()
        times.append(time.perf_counter() - start)
        first_loss = float(loss) if first_loss is None else first_loss
    tokens = sum(len(it.prompt_ids) + len(module.target_ids(it)) for b in batches[1:] for it in b)
    return {"mode": mode, "times": times[1:], "tokens": tokens, "first_loss": first_loss,
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6, help="timed steps per mode (after one untimed)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved runs per mode; the fastest is reported")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    p.add_argument("--child", choices=[*MODES, BATCH], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.threads)))
        return

    modes = [*MODES, BATCH]
    runs: dict[str, list[dict]] = {mode: [] for mode in modes}
    for _ in range(args.rounds):
        for mode in modes:
            out = subprocess.run([sys.executable, "-m", "benchmarks.bench_sft", "--child", mode, "--steps",
                                  str(args.steps), "--threads", str(args.threads)],
                                 cwd=ROOT, capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = [min(runs[mode], key=lambda r: sum(r["times"])) for mode in modes]
    base = sum(results[0]["times"])
    from benchmarks._results import markdown_table, record

    rows = [[r["mode"], f"{sum(r['times']):.1f}", " / ".join(f"{sum(x['times']):.1f}" for x in runs[r["mode"]]),
             f"{sum(r['times']) / len(r['times']):.2f}", f"{r['tokens'] / sum(r['times']):.0f}",
             f"{base / sum(r['times']):.2f}x", f"{max(x['peak'] for x in runs[r['mode']]) / 2**30:.2f}",
             f"{r['first_loss']:.6f}"] for r in results]
    table = markdown_table(["gradient checkpointing", f"{args.steps} steps s (fastest)", "each round s", "s / step",
                            "tokens / s", "speed-up vs full", "peak RSS GiB", "first batch loss"], rows)
    print(table)
    if args.no_record:
        return
    tokens = results[0]["tokens"]
    body = (f"The demo's SFT batches ({args.steps} timed steps of {CONFIG.relative_to(ROOT)}'s batch size, "
            f"{tokens} tokens in all, after one untimed step), each mode in its own process, {args.rounds} "
            f"interleaved rounds (the fastest reported), {args.threads} threads. `selective` keeps the outputs of the matrix products and the attention kernel and "
            f"recomputes only the elementwise operations (`restlit/checkpointing.py`). The first three rows take one backward per "
            f"sample, as `restlit sft` does; the last one backward of the batch, as it did before.\n\n{table}\n")
    record("sft_checkpointing", "SFT step: gradient checkpointing full vs selective vs off", body,
           f"python -m benchmarks.bench_sft --steps {args.steps} --rounds {args.rounds} --threads {args.threads}")


if __name__ == "__main__":
    main()
