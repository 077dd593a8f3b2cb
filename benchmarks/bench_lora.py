"""Workload W with LoRA adapters beside full fine-tuning, in one run (issue 31).

W is ``bench_step.py``'s: SmolLM2-135M-Instruct (embedded), float32, 2 threads, CPU; 4 ToolRL
prompts x 4 completions of up to 128 tokens per step; entropy weights; the same hash reward. Each
variant runs ``bench_step``'s restlit child in its own process (so each reports its own peak RSS,
``ru_maxrss``) on the same prompts:

- ``entropy``: full fine-tuning (every weight trained, AdamW state for all of them);
- ``entropy+lora``: LoRA r=16, alpha 32, on every linear layer of attention and MLP
  (``model.lora.r=16``): the base frozen, AdamW state for the adapters only;
- with ``--kl`` also ``entropy+kl`` and ``entropy+lora-kl``: a KL term (``kl_coef`` 0.001), i.e. a
  reference copy of the model under full fine-tuning, the policy with its adapters disabled under LoRA.

Step time: one training step (``on_train_batch_start`` -> ``on_train_batch_end``); rollout and
update from ``metrics.csv``; peak RSS at the end of the last training step and at exit (which
includes the checkpoint and ``final/`` export). The machine is shared: the table gives the load
average at each step's end. Writes the ``bench_lora`` section of ``RESULTS.md``::

    nice -n 5 .venv/bin/python benchmarks/bench_lora.py             # entropy vs entropy+lora
    nice -n 5 .venv/bin/python benchmarks/bench_lora.py --kl        # and both with a KL term
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_step
from benchmarks._results import markdown_table, record

GIB = 1024**3


def run(args: argparse.Namespace, work: Path) -> dict:
    """Each mode's child, in order; returns ``{mode: result}`` and the run's metadata."""
    bench_step.ARGS = args
    rows, model_dir = bench_step._prompt_rows(args)
    tokens = [r["restlit_prompt_tokens"] for r in rows]
    print(f"prompts: {len(rows)} (tokens min {min(tokens)}, mean {statistics.mean(tokens):.0f}, max {max(tokens)})",
          flush=True)
    results = {}
    started, load_start = time.time(), os.getloadavg()[0]
    for mode in args.modes:
        out = work / f"restlit-{mode}"
        cmd = [sys.executable, bench_step.__file__, "--worker", "restlit", "--mode", mode, "--out", str(out),
               "--steps", str(args.steps), *bench_step._common(args)]
        results[mode] = bench_step._run_child(cmd, work / f"restlit-{mode}.log")
        print(f"{mode}: " + json.dumps({k: v for k, v in results[mode].items() if k != "steps"}), flush=True)
    meta = {"load_start": load_start, "load_end": os.getloadavg()[0], "minutes": (time.time() - started) / 60,
            "prompt_tokens": tokens, "steps": args.steps, "threads": args.threads,
            "max_new_tokens": args.max_new_tokens, "params": parameter_counts(model_dir)}
    return {"results": results, "meta": meta}


def parameter_counts(model_dir: str, r: int = 16) -> dict[str, int]:
    """The model's parameters and its LoRA adapters' at rank ``r`` on every linear layer but the LM
    head (``r (in + out)`` each), counted on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    adapters = sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head"))
    return {"base": sum(p.numel() for p in model.parameters()), "adapters": adapters}


def report(data: dict) -> str:
    """The section's text: one row per variant, then LoRA against full fine-tuning."""
    results, meta = data["results"], data["meta"]
    rows = []
    for mode, r in results.items():
        if "error" in r:
            rows.append([mode, r["error"], *["-"] * 7])
            continue
        steps = r["steps"]
        rows.append([
            mode, f"{statistics.median(r['times']):.1f}",
            " / ".join(f"{s['time/rollout']:.1f}" for s in steps), " / ".join(f"{s['time/update']:.1f}" for s in steps),
            " / ".join(f"{s['completion/length']:.0f}" for s in steps), f"{r['rss_after_step'][-1] / GIB:.2f}",
            f"{r['peak'] / GIB:.2f}", " / ".join(f"{x:.1f}" for x in r["load"]),
            f"{statistics.median(r['cpu']):.1f}",
        ])
    table = markdown_table(["variant", "median step s (wall)", "rollout s per step", "update s per step",
                            "mean completion tokens per step", "peak RSS GiB, training", "peak RSS GiB, process",
                            "load at steps' ends", "median step CPU s"], rows)
    lines = []
    for full, lora in (("entropy", "entropy+lora"), ("entropy+kl", "entropy+lora-kl")):
        a, b = results.get(full), results.get(lora)
        if not a or not b or "error" in a or "error" in b:
            continue
        ta, tb = statistics.median(a["times"]), statistics.median(b["times"])
        pa, pb = a["rss_after_step"][-1], b["rss_after_step"][-1]
        lines.append(f"- {lora} against {full}: step {tb:.1f} vs {ta:.1f} s ({tb / ta:.2f}x); peak RSS in training "
                     f"{pb / GIB:.2f} vs {pa / GIB:.2f} GiB ({1 - pb / pa:.0%} lower)"
                     f"; goals: step no slower **{'met' if tb <= ta else 'NOT met'}**, peak at least 30% lower "
                     f"**{'met' if pb <= 0.7 * pa else 'NOT met'}**. Each step, wall (CPU) s: "
                     f"{' / '.join(f'{t:.0f} ({c:.0f})' for t, c in zip(b['times'], b['cpu']))} vs "
                     f"{' / '.join(f'{t:.0f} ({c:.0f})' for t, c in zip(a['times'], a['cpu']))}: on a loaded "
                     f"machine compare steps of similar load, not only the medians.")
    tokens = meta["prompt_tokens"]
    head = (f"Workload W (`bench_step.py`): SmolLM2-135M-Instruct, float32, {meta['threads']} threads, 4 prompts x 4 "
            f"completions of up to {meta['max_new_tokens']} tokens per step, entropy weights, the hash reward; prompts of {min(tokens)} to "
            f"{max(tokens)} tokens; {meta['steps']} timed steps per variant, each variant its own process, run one "
            f"after the other. LoRA: r=16, alpha 32, every linear layer of attention and MLP (`model.lora.r=16`); "
            f"{meta['params']['adapters'] / 1e6:.1f}M adapter parameters trained, the "
            f"{meta['params']['base'] / 1e6:.0f}M of the base frozen. Load average {meta['load_start']:.1f} at the start, "
            f"{meta['load_end']:.1f} at the end (2 cores shared with other jobs: wall times are inflated and noisy; "
            f"the CPU time column is less so). Whole run {meta['minutes']:.0f} min.")
    return head + "\n\n" + table + "\n\n" + "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kl", action="store_true", help="also both with a KL term")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=128, help="W: 128 (fewer for a quick smoke run)")
    p.add_argument("--keep", help="keep the run directories, logs and summary.json here")
    p.add_argument("--report-only", metavar="DIR", help="rebuild the section from DIR/summary.json")
    p.add_argument("--no-record", action="store_true", help="print only; do not update RESULTS.md")
    args = p.parse_args()
    args.modes = ["entropy", "entropy+lora", *(["entropy+kl", "entropy+lora-kl"] if args.kl else [])]
    args.warmup, args.prompts, args.generations = 0, 4, 4
    ctx = None
    if args.report_only:
        work = Path(args.report_only)
        data = json.loads((work / "summary.json").read_text())
    else:
        if args.keep:
            work = Path(args.keep)
            work.mkdir(parents=True, exist_ok=True)
        else:
            ctx = tempfile.TemporaryDirectory(prefix="bench_lora.")
            work = Path(ctx.name)
        data = run(args, work)
        (work / "summary.json").write_text(json.dumps(data, indent=1))
    body = report(data)
    print(body)
    if not args.no_record:
        record("bench_lora", "LoRA adapters vs full fine-tuning on workload W (CPU)", body,
               "nice -n 5 python benchmarks/bench_lora.py" + (" --kl" if args.kl else ""))
    if ctx is not None:
        ctx.cleanup()


if __name__ == "__main__":
    main()
