"""Issue 17's GPU check: workload W (``benchmarks/bench_step.py``: 4 prompts x 4 completions x 128
tokens, ToolRL prompts) on one GPU at bf16 with the HF engine, under Lightning's single-device
strategy and under its FSDP strategy with one process, each with full fine-tuning and with LoRA
adapters (``auto+lora``, ``fsdp+lora``: r=16 on every linear layer of attention and MLP; under FSDP
the frozen base is sharded and the adapters train); prints step time, tokens/s, peak GPU memory
and the update's MFU against the card's dense bf16 peak.

The model is SmolLM2-135M's architecture with random weights (``model.init: random``): the device
image has no ``gguf`` to read the embedded weights, and a step's cost does not depend on the
weights' values. Random weights rarely stop early, so most completions run the full 128 tokens
(the table says the mean length). The update's useful FLOPs are ``6 N`` per update token (each
prompt counted once, as the packed group forward runs it), ``N`` the non-embedding parameters;
with LoRA ``4 N`` (the frozen weights get no weight gradient; the adapters' own FLOPs, under 2% of
``N`` at r=16, are not counted).

Prepared for a lent machine; not run in a session without one. On the device (wheels for
``datasets``/``jsonschema`` carried as ``.whl``, the tokenizer as ``.gpu/tokenizer``, see
``/work/.library/device/README.md``; under 8 minutes)::

    python3 benchmarks/gpu_check.py --tokenizer .gpu/tokenizer --out $OUT/gpu_check.json
    .venv/bin/python benchmarks/gpu_check.py --accelerator cpu --dtype float32 --strategies auto --steps 1 --warmup 0  # smoke
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MARK = "GPU_CHECK_RESULT "
# SmolLM2-135M-Instruct's config (the embedded model's), for a random-weight model of its shape
ARCHITECTURE = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
                "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True}
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # dense bf16, per the vendors' sheets


def worker(args: argparse.Namespace) -> None:
    import lightning as L
    import torch

    from benchmarks.bench_step import WORKLOAD_DATA, bench_reward_fn, fit_with_callback
    from restlit.config import load_config

    strategy, _, variant = args.strategy.partition("+")
    overrides = [f"data.raw=[{WORKLOAD_DATA}]", "model.init=random", f"model.architecture={json.dumps(ARCHITECTURE)}",
                 f"model.dtype={args.dtype}", f"trainer.accelerator={args.accelerator}", "trainer.devices=1",
                 f"trainer.strategy={strategy}", f"trainer.precision={'bf16-true' if args.dtype == 'bfloat16' else '32-true'}",
                 f"trainer.max_steps={args.warmup + args.steps}", "trainer.prompts_per_step=4", "rollout.n=4",
                 "rollout.max_new_tokens=128", "rollout.engine=hf", "trainer.checkpoint_every=100000",
                 "logging.progress_bar=false", "logging.tensorboard=false", f"output_dir={args.workdir}/{args.strategy.replace('+', '-')}",
                 f"data.cache_dir={args.workdir}/cache"]
    if args.tokenizer:
        overrides.append(f"model.tokenizer={args.tokenizer}")
    if variant == "lora":
        overrides.append("model.lora.r=16")
    config = load_config(ROOT / "configs" / "quickstart-cpu.yaml", overrides)
    cuda = args.accelerator == "gpu"

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.t0 = 0.0

        def on_train_batch_start(self, *a):
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, *a):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t0)

    timer = Timer()
    rows = fit_with_callback(config, timer, bench_reward_fn(config))[args.warmup:]
    print(MARK + json.dumps({
        "times": timer.times[args.warmup:], "update": [r["time/update"] for r in rows],
        "rollout": [r["time/rollout"] for r in rows], "tokens_per_s": [r["throughput/tokens_per_s"] for r in rows],
        "length": [r["completion/length"] for r in rows],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu"}), flush=True)


def update_mfu(update_s: float, mean_length: float, peak_tflops: float, lora: bool = False) -> float:
    """The update's model FLOPs utilisation: ``bench_step.step_limit``'s update time at the card's
    peak (``6 N`` per update token, W's 4 prompts once at their mean of 571 tokens, as bench_step
    prints for W's data, plus 16 completions of ``mean_length``) over the measured time; with
    ``lora`` two thirds of it (``4 N``: no weight gradient for the frozen base)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from benchmarks.bench_step import step_limit

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**ARCHITECTURE, vocab_size=49152))
    machine = {"gflops": peak_tflops * 1e3, "gbps": 1.0, "params": sum(p.numel() for p in model.parameters()),
               "kv_bytes_per_token": 0}
    return step_limit(machine, [571] * 4, 16, mean_length)["update"] * (4 / 6 if lora else 1.0) / update_s


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--strategies", default="auto,fsdp,auto+lora,fsdp+lora")
    p.add_argument("--strategy", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--tokenizer", default=None, help="a tokenizer directory (default: the embedded model's)")
    p.add_argument("--workdir", default="/tmp/restlit-gpu-check")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = p.parse_args()
    if args.strategy:
        return worker(args)
    results = {}
    for strategy in args.strategies.split(","):
        cmd = [sys.executable, __file__, "--strategy", strategy, *sys.argv[1:]]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        found = [line[len(MARK):] for line in proc.stdout.splitlines() if line.startswith(MARK)]
        if proc.returncode or not found:
            print(f"{strategy}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
            continue
        results[strategy] = json.loads(found[-1])
    peak = next((v for k, v in PEAK_TFLOPS.items() if any(k in r["device"] for r in results.values())), None)
    print("| strategy | device | step s | rollout s | update s | tokens/s | mean completion | peak GPU GiB | update MFU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for strategy, r in results.items():
        length, update = _median(r["length"]), _median(r["update"])
        mfu = update_mfu(update, length, peak, lora=strategy.endswith("+lora")) if peak else None
        print(f"| {strategy} | {r['device']} | {_median(r['times']):.2f} | {_median(r['rollout']):.2f} | {update:.2f} | "
              f"{_median(r['tokens_per_s']):,.0f} | {length:.0f} | "
              f"{'-' if r['peak_gib'] is None else format(r['peak_gib'], '.2f')} | "
              f"{'-' if mfu is None else format(mfu, '.1%')} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    if not results:
        sys.exit(1)


if __name__ == "__main__":
    main()
