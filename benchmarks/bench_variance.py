"""Gradient variance at the demo's SFT model with enough batches for a usable interval.

The ablation benchmark (``bench_ablation.py``) measured the ratio of relative gradient variance
entropy / uniform from 6 rollout batches; its 95% interval was wider than the effect it looked for.
This script repeats that measurement alone, at the same checkpoint (the demo's SFT warm start of
``configs/quickstart-cpu.yaml``) and the same batch shape (the first ``--variance-prompts`` training
prompts x 4 completions of 128 tokens), with ``--batches`` independent batches (default 32), and
records it as its own section of ``benchmarks/RESULTS.md`` beside the old one (one section per
``--batches``: a run with another K adds a section, one with the same K replaces it). The report gives the
ratio twice: from the batches' gradients, and estimated prompt by prompt (the same quantity with
the between-prompt cross products left out; ``restlit.experiments.variance_math``).

Resumable: the SFT model is kept in ``--workdir`` and reused, and so is every measured batch
(``WORKDIR/variance/batches``): stopped, or run again with a larger ``--batches``, it measures only
the batches it does not have yet, and the report covers them all. ``--shard I/N`` measures only the
batches ``k % N == I`` and neither reports nor records: on a 2-core machine, two shards of one thread
each (``OMP_NUM_THREADS=1``) once the SFT model exists, then one call without ``--shard`` to report.

    .venv/bin/python benchmarks/bench_variance.py [--workdir runs/bench-variance] [--batches 32]
        [--variance-prompts 8] [--weightings uniform entropy] [--checkpointing] [--shard I/N] [--no-record]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "quickstart-cpu.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default=str(REPO / "runs" / "bench-variance"))
    p.add_argument("--batches", type=int, default=32, help="rollout batches K")
    p.add_argument("--variance-prompts", type=int, default=8, help="prompts per batch (x 4 completions)")
    p.add_argument("--config", default=str(CONFIG), help="base config (a smoke test: configs/tiny-test.yaml)")
    p.add_argument("--set", action="append", default=[], help="more overrides for every stage")
    p.add_argument("--weightings", nargs="+", default=["uniform", "entropy"],
                   help="weightings to measure (uniform is the reference); each costs a backward pass per batch")
    p.add_argument("--checkpointing", action="store_true",
                   help="keep model.gradient_checkpointing on (off by default here: each of the backward passes "
                        "on one forward's graph would recompute the forward)")
    p.add_argument("--shard", help="I/N: measure only the batches k with k %% N == I (the SFT model must exist); no "
                                   "report, no record")
    p.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from benchmarks._results import record
    from restlit.config import load_config
    from restlit.experiments.variance import markdown, measure_variance, stored_batches, write_report
    from restlit.training.run import sft

    work = Path(args.workdir)
    common = [f"output_dir={work / 'quickstart'}", f"data.cache_dir={work / 'cache'}", "logging.progress_bar=false",
              "logging.tensorboard=false", *args.set]
    seconds: dict[str, int] = {}
    sft_model = work / "quickstart" / "sft" / "final"
    shard = None
    if args.shard:
        i, _, n = args.shard.partition("/")
        if not (i.isdigit() and n.isdigit() and int(i) < int(n)) or not (sft_model / "config.json").is_file():
            p.error(f"--shard {args.shard}: give I/N with 0 <= I < N, once {sft_model} exists (a call without --shard "
                    "builds it)")
        shard = (int(i), int(n))
    t = time.perf_counter()
    if not (sft_model / "config.json").is_file():
        sft(load_config(args.config, common))
        seconds["sft"] = round(time.perf_counter() - t)

    t = time.perf_counter()
    vconfig = load_config(args.config, [*common, f"model.path={sft_model}", "model.init=pretrained",
                                        f"trainer.prompts_per_step={args.variance_prompts}",
                                        *([] if args.checkpointing else ["model.gradient_checkpointing=false"])])
    store = work / "variance" / "batches"
    kept = stored_batches(store, below=args.batches)
    report = measure_variance(vconfig, batches=args.batches, weightings=args.weightings, store=store, shard=shard)
    if report is None:
        print(f"shard {args.shard}: {stored_batches(store, below=args.batches)} of {args.batches} batches stored")
        return
    seconds["variance"] = round(time.perf_counter() - t)
    new = stored_batches(store, below=args.batches) - kept
    out = write_report(report, store.parent, overwrite=True)
    table = markdown(report)
    sizes = (f"{Path(args.config).name}'s SFT warm start ({vconfig.model.path}), float32, {torch.get_num_threads()} "
             f"thread(s); {args.batches} rollout batches of the first {args.variance_prompts} training prompts x "
             f"{vconfig.rollout.n} completions ({vconfig.rollout.max_new_tokens} tokens), full-model gradients "
             f"count-sketched to 65,536 numbers, weightings {', '.join(args.weightings)}, gradient checkpointing "
             f"{'on' if vconfig.model.gradient_checkpointing else 'off'}. Stage seconds: {seconds} ({new} batches "
             f"measured by this call, {kept} read from earlier ones).")
    body = f"{sizes}\n\n{table}\n\nReport: `{out}` (not committed)."
    print(body, flush=True)
    if not args.no_record:
        record(f"bench_variance_k{args.batches}", f"Gradient variance at the demo's SFT model, {args.batches} batches", body,
               "python benchmarks/bench_variance.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
