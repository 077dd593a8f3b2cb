"""Step time and peak memory of a ResT training step, restlit vs TRL's GRPOTrainer, side by side.

The setup of issue 5: SmolLM2-135M-Instruct (the embedded model, ``model.path: smollm2-135m``),
ToolRL prompts from ``benchmarks/data/toolrl_240.json`` (rendered by ``restlit.prompts``, the
model's chat template), 4 prompts x 4 completions = 16 completions per step, up to 128 new tokens,
float32, 2 threads, CPU.

Both sides do the same work per step: sample 16 completions (temperature 1, top-p 1) of up to 128
tokens, score them, GRPO advantages per group of 4, one policy forward + backward over prompt +
completion tokens, gradient clipping (1.0) and one AdamW step (lr 2e-6). No reference model and no
KL on either side (restlit ``kl_coef: 0``, TRL ``beta=0.0``), one PPO epoch / iteration, so neither
recomputes old log-probs.

The reward is the same deterministic function of the completion text on both sides
(:func:`bench_reward`, a hash of the text mapped to [0, 1)), so every group of 4 has reward
variance and every step runs the full update. ToolRL's real reward would be constant on most groups
of an un-fine-tuned SmolLM2 (it writes no tool calls), and restlit skips a step whose groups all
have equal rewards, which would time a step without its update.

* restlit: ``restlit.training.run.fit(config, reward_fn=...)`` on ``configs/quickstart-cpu.yaml`` with
  ``objective.weights.mode`` = ``entropy`` and ``uniform`` (the update is one micro-batch per prompt
  group, the prompt encoded once and its KV cache shared by the 4 completions). A callback times
  each training batch (``on_train_batch_start`` -> ``on_train_batch_end``); the per-phase split
  comes from ``RUN/metrics.csv`` (``time/rollout``, ``time/scoring``, ``time/update``).
* TRL: ``GRPOTrainer`` with ``num_generations=4``, ``per_device_train_batch_size=4``,
  ``gradient_accumulation_steps=4`` (micro-batch 16 is killed for memory on a 24 GB machine), so
  one optimizer step = one generation of 16 completions + 4 micro-batches of 4 sequences;
  ``shuffle_dataset=False`` and a dataset ordered so that TRL's step ``s`` gets the same 4 prompts as
  restlit's step ``s``. A ``TrainerCallback`` times ``on_step_begin`` -> ``on_step_end``.

Every variant runs in its own process (``OMP_NUM_THREADS=2``, ``torch.set_num_threads(2)``), which
reports its own peak RSS (``ru_maxrss``): after the last timed step (training peak) and at exit
(including restlit's final export). The first step of each run is a warm-up and is not timed.

TRL lives in a separate virtual environment so the project's stays untouched::

    python3 -m venv /tmp/trlvenv
    /tmp/trlvenv/bin/pip install torch==2.13.0          # pin first: a bare torch pulls a CUDA build
    /tmp/trlvenv/bin/pip install "transformers==5.19.0" trl accelerate datasets
    # (measured with trl 1.16.0, accelerate 1.15.0, datasets 5.2.0)

    .venv/bin/python benchmarks/bench_step.py --trl-python /tmp/trlvenv/bin/python
    .venv/bin/python benchmarks/bench_step.py --skip-trl --no-record      # restlit only

Without ``--trl-python`` the script uses ``$TRL_PYTHON``; ``--skip-trl`` leaves TRL out.

A third child checks the ``entropy`` vs ``uniform`` cost where the mode acts: the real
``RestModule`` statistics, weights and update (steps 5-7 of its ``training_step``) under a Trainer, on the same 16 completions, the modes alternated ABBA in one
process (``--update-reps`` per mode), so the two see the same machine load. ``--parts`` runs only
some of the three (with ``--keep DIR``, the others' results in ``DIR/summary.json`` are kept);
``--report-only DIR`` rebuilds the table from a kept ``summary.json``.

The machine is shared: a step's wall time next to other jobs can be several times its time alone;
the table reports each step's load average, and the CPU time of each step beside its wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quickstart-cpu.yaml"
# workload W's prompts: 240 records of ToolRL's rlla_sft.json (see benchmarks/data/README.md)
WORKLOAD_DATA = ROOT / "benchmarks" / "data" / "toolrl_240.json"
MARK = "BENCH_STEP_RESULT "
GB = 1024**3


def bench_reward(text: str) -> float:
    """The benchmark's reward: a deterministic hash of the completion text, in [0, 1). Identical
    on both sides; distinct completions almost surely get distinct rewards."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) / 2**32


def bench_reward_fn(config):
    """``RestModule``'s ``reward_fn`` scoring completions with :func:`bench_reward`."""
    from restlit.rewards import Reward, reward_bounds

    def reward_fn(completion, item, step):
        r = bench_reward(completion.text)
        return Reward(format=0.0, correctness=r, total=r, bounds=reward_bounds(step, config.reward))

    return reward_fn


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------
# restlit child (project venv)
# ------------------------------------------------------------------------------------------------


def _mode_overrides(mode: str) -> list[str]:
    """A restlit variant's overrides: ``NAME`` is weighting NAME, ``NAME+plain`` the same with
    ``rollout.pack_weights=false`` (the linear weights as they are while generating); ``NAME+lora``,
    ``NAME+kl`` and ``NAME+lora-kl`` add :data:`SETTING_VARIANTS`' settings (LoRA adapters, a KL term).
    ``NAME+unfused``, ``NAME+untrimmed``, ``NAME+mmap1m`` and ``NAME+mmap2m`` change no setting: the child
    decodes without the fused step (:func:`_unfused`), keeps freed heap pages
    (:func:`_untrimmed`), or starts with a lower mmap threshold (:func:`_child_env`)."""
    plain = _variant(mode) == "plain"
    return [f"objective.weights.mode={mode.partition('+')[0]}", f"rollout.pack_weights={'false' if plain else 'true'}",
            *SETTING_VARIANTS.get(_variant(mode), [])]


def _variant(mode: str) -> str:
    """``NAME+VARIANT`` (or a row name ``restlit NAME+VARIANT``) -> ``VARIANT`` (one of
    :data:`VARIANTS`); ``NAME`` -> ``""``."""
    return mode.partition("+")[2]


def _child_env(mode: str) -> dict[str, str]:
    """``NAME+mmap1m`` / ``NAME+mmap2m``: the child starts with glibc's mmap threshold fixed at 1 / 2
    MiB (``MALLOC_MMAP_THRESHOLD_``, which restlit then leaves alone; :mod:`restlit.memory`)."""
    size = MMAP_VARIANTS.get(_variant(mode))
    return {"MALLOC_MMAP_THRESHOLD_": str(size)} if size else {}


def _unfused(mode: str) -> bool:
    """``NAME+unfused``: the child decodes through the model's forward on packed weights
    (:class:`restlit.kernels.decoding.FusedDecoder` never applies), i.e. runs as restlit did before it."""
    return _variant(mode) == "unfused"


def _untrimmed(mode: str) -> bool:
    """``NAME+untrimmed``: the child replaces :func:`restlit.kernels.memory.release` with a no-op, i.e. runs
    as restlit did before it handed freed heap pages back between phases."""
    return _variant(mode) == "untrimmed"


def _overrides(args: argparse.Namespace, mode: str, output_dir: str) -> list[str]:
    """The W config of a restlit child of ``mode`` (:func:`_mode_overrides`)."""
    return [
        f"data.raw=[{WORKLOAD_DATA}]",
        "trainer.precision=32-true",  # the workload is float32; the demo config's auto may pick bf16-mixed
        *_mode_overrides(mode),
        f"trainer.max_steps={args.warmup + args.steps}",
        f"trainer.prompts_per_step={args.prompts}",
        f"rollout.n={args.generations}",
        f"rollout.max_new_tokens={args.max_new_tokens}",
        "trainer.checkpoint_every=100000",
        "logging.progress_bar=false",
        "logging.tensorboard=false",
        f"output_dir={output_dir}",
    ]


def fit_with_callback(config, callback, reward_fn) -> list[dict[str, float]]:
    """``restlit.training.run.fit(config)`` with ``callback`` added to the trainer fit() builds; returns
    the logged training steps (the ``metrics.csv`` rows with ``time/rollout``)."""
    import csv

    from restlit import train

    make_trainer = train.make_trainer

    def make_trainer_with_callback(*a, **k):
        trainer = make_trainer(*a, **k)
        trainer.callbacks.append(callback)
        return trainer

    train.make_trainer = make_trainer_with_callback
    try:
        run_dir = train.fit(config, reward_fn=reward_fn)
    finally:
        train.make_trainer = make_trainer
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f) if row.get("time/rollout")]


def worker_restlit(args: argparse.Namespace) -> None:
    _threads(args.threads)
    import lightning as L

    from restlit.config import load_config

    config = load_config(CONFIG, _overrides(args, args.mode, args.out))
    reward_fn = bench_reward_fn(config)
    if _untrimmed(args.mode):
        from restlit.kernels import memory

        memory.release = lambda: False
    if _unfused(args.mode):
        from restlit.kernels.decoding import FusedDecoder

        FusedDecoder.build = classmethod(lambda cls, model, rows: None)

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.cpu: list[float] = []
            self.rss: list[int] = []
            self.load: list[float] = []
            self._t0 = self._c0 = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t0, self._c0 = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.times.append(time.perf_counter() - self._t0)
            self.cpu.append(time.process_time() - self._c0)
            self.rss.append(_peak_bytes())
            self.load.append(os.getloadavg()[0])

    timer = StepTimer()
    start = time.perf_counter()
    rows = fit_with_callback(config, timer, reward_fn)
    total = time.perf_counter() - start
    keys = ["time/rollout", "time/scoring", "time/update", "skipped", "completion/length",
            "completion/truncated", "reward/total_std", "throughput/tokens_per_s"]
    per_step = [{k: r.get(k) for k in keys} for r in rows]
    print(MARK + json.dumps({
        "times": timer.times, "cpu": timer.cpu, "load": timer.load, "rss_after_step": timer.rss, "peak": _peak_bytes(), "total_s": total,
        "steps": per_step,
    }))


# ------------------------------------------------------------------------------------------------
# TRL child (TRL venv; must not import restlit)
# ------------------------------------------------------------------------------------------------


def worker_trl(args: argparse.Namespace) -> None:
    _threads(args.threads)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    spec = json.loads(Path(args.prompts_file).read_text())
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Same prompt tokens as restlit's? (TRL applies the chat template itself.)
    mismatched = 0
    for row in spec["rows"]:
        ids = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        mismatched += len(ids) != row["restlit_prompt_tokens"]
    dataset = Dataset.from_list([{"prompt": r["prompt"]} for r in spec["rows"]])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)

    def reward(prompts, completions, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [bench_reward(t) for t in texts]

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.cpu: list[float] = []
            self.rss: list[int] = []
            self.load: list[float] = []
            self.logs: list[dict] = []
            self._t0 = self._c0 = 0.0

        def on_step_begin(self, a, state, control, **kw):
            self._t0, self._c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, a, state, control, **kw):
            self.times.append(time.perf_counter() - self._t0)
            self.cpu.append(time.process_time() - self._c0)
            self.rss.append(_peak_bytes())
            self.load.append(os.getloadavg()[0])

        def on_log(self, a, state, control, logs=None, **kw):
            if logs:
                self.logs.append({k: v for k, v in logs.items() if isinstance(v, (int, float))})

    cfg = GRPOConfig(
        output_dir=args.out, max_steps=args.warmup + args.steps, learning_rate=2e-6, weight_decay=0.01,
        lr_scheduler_type="constant", max_grad_norm=1.0, seed=0,
        per_device_train_batch_size=args.trl_micro_batch,
        gradient_accumulation_steps=args.prompts * args.generations // args.trl_micro_batch,
        num_generations=args.generations, max_completion_length=args.max_new_tokens,
        temperature=1.0, top_p=1.0, beta=0.0, num_iterations=1, epsilon=0.2,
        use_vllm=False, shuffle_dataset=False, bf16=False, fp16=False, use_cpu=True,
        logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, log_completions=False,
    )
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[timer])
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    steps = [{"completion/length": log.get("completions/mean_length"),
              "completion/truncated": log.get("completions/clipped_ratio"),
              "reward/total_std": log.get("reward_std")} for log in timer.logs if "loss" in log]
    import trl

    print(MARK + json.dumps({
        "times": timer.times, "cpu": timer.cpu, "load": timer.load, "rss_after_step": timer.rss, "peak": _peak_bytes(), "total_s": total,
        "steps": steps, "prompt_token_mismatches": mismatched, "trl_version": trl.__version__,
    }))


# ------------------------------------------------------------------------------------------------
# update-only child (project venv): entropy vs uniform on the same groups, in one process
# ------------------------------------------------------------------------------------------------


def update_order(modes: list[str], reps: int) -> list[str]:
    """One untimed warm-up update, then ``reps`` updates per mode in ABBA order (drift cancels)."""
    order: list[str] = []
    for r in range(reps):
        order += modes if r % 2 == 0 else list(reversed(modes))
    return [modes[-1]] + order


def worker_update(args: argparse.Namespace) -> None:
    """The real ``RestModule`` update (``entropy_statistics``, ``step_weights``, ``update``) under a
    real Trainer, alternating the weighting mode on the same
    16 completions (reference answers of the step-0 prompts, cut to ``max_new_tokens`` tokens, with
    random entropies and advantages): the update is where the weighting mode acts, and the rollout is
    the same for both modes, so this isolates their difference from the machine's other load."""
    _threads(args.threads)
    import dataclasses

    import lightning as L
    import torch

    from restlit.config import load_config
    from restlit.rollout.base import Completion
    from restlit.training.data import ToolUseDataModule
    from restlit.training.module import RestModule
    from restlit.training.run import build_tokenizer_and_policy, make_trainer

    modes = args.mode.split(",")
    order = update_order(modes, args.steps)
    config = load_config(CONFIG, _overrides(args, modes[0], args.out) + [
        f"trainer.max_steps={len(order)}", "logging.csv=false"])
    L.seed_everything(0, verbose=False)
    tokenizer, policy = build_tokenizer_and_policy(config)
    data = ToolUseDataModule(config.data, tokenizer, args.prompts)
    n, c = args.generations, args.max_new_tokens
    records: list[dict] = []

    class Replay(RestModule):
        groups = None

        def training_step(self, batch, batch_idx):
            if self.groups is None:  # the step-0 prompts, the same groups at every step
                g = torch.Generator().manual_seed(0)
                outs = []
                for i, item in enumerate(batch):
                    ids = tokenizer(item.target_text, add_special_tokens=False)["input_ids"]
                    ids = (ids * (1 + (c + 8 * n) // max(1, len(ids))))[: c + 8 * n]
                    group = []
                    for j in range(n):
                        tok = ids[8 * j : 8 * j + c]
                        group.append(Completion(
                            prompt_index=i, token_ids=tok, text=tokenizer.decode(tok, skip_special_tokens=True),
                            finish_reason="length", logprobs=(-torch.rand(c, generator=g)).tolist(),
                            entropies=(3 * torch.rand(c, generator=g)).tolist()))
                    outs.append(group)
                self.groups = self.make_groups(batch, outs, torch.randn(len(batch) * n, generator=g))
            step = self.global_step
            mode = order[step]
            self.config.objective.weights = dataclasses.replace(self.config.objective.weights, mode=mode)
            t0, c0 = time.perf_counter(), time.process_time()
            # steps 5-7 of RestModule.training_step: statistics, weights, update
            weights, denominator = self.step_weights(self.groups, self.entropy_statistics(self.groups), step)
            _, out = self.update(self.groups, weights, denominator)
            records.append({"mode": mode, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                            "loss": out.get("train/loss"), "grad_norm": out.get("train/grad_norm")})

    module = Replay(config, policy, tokenizer)
    trainer = make_trainer(config, Path(args.out), max_steps=len(order), checkpoints=False)
    trainer.fit(module, datamodule=data)
    prompt_tokens = [int(g.prompt.numel()) for g in module.groups]
    print(MARK + json.dumps({"updates": records[1:], "warmup": records[:1], "prompt_tokens": prompt_tokens,
                             "completion_tokens": c, "peak": _peak_bytes()}))


# ------------------------------------------------------------------------------------------------
# Parent
# ------------------------------------------------------------------------------------------------


def _prompt_rows(args: argparse.Namespace) -> tuple[list[dict], str]:
    """The prompts of steps 0 .. warmup+steps-1 as restlit's data module serves them, with their
    chat messages for TRL; and the converted model directory."""
    from restlit.config import load_config
    from restlit.data_prep.samples import Sample, load_samples
    from restlit.models import load_tokenizer, resolve
    from restlit.training.data import StepBatches, ToolUseDataModule, prepared_dir

    config = load_config(CONFIG, _overrides(args, "entropy", "unused"))
    tokenizer = load_tokenizer(config.model.tokenizer or config.model.path)
    data = ToolUseDataModule(config.data, tokenizer, args.prompts)
    data.prepare_data()
    data.setup("fit")
    by_id = {}
    for row in load_samples(prepared_dir(config.data))["train"]:
        by_id[row["id"]] = row
    batches = StepBatches(data.train_items, args.prompts, 1, 0, config.data.seed)
    rows = []
    for step in range(args.warmup + args.steps):
        for item in batches.batch(step):
            sample = Sample.from_row(by_id[item.id])
            rows.append({"id": item.id, "prompt": sample.messages(), "restlit_prompt_tokens": len(item.prompt_ids)})
    return rows, str(resolve(config.model.path))


def _run_child(cmd: list[str], log: Path, extra_env: dict[str, str] | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(ARGS.threads), MKL_NUM_THREADS=str(ARGS.threads),
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT), **(extra_env or {}))
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with log.open("w") as f:
        res = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=f, text=True,
                             check=False)
    wall = time.perf_counter() - start
    with log.open("a") as f:
        f.write(res.stdout)
    for line in reversed(res.stdout.splitlines()):
        if line.startswith(MARK):
            out = json.loads(line[len(MARK):])
            out.update(wall_s=wall, load_before=load, load_after=os.getloadavg()[0], returncode=res.returncode)
            return out
    return {"error": f"exit code {res.returncode} (signal {-res.returncode})" if res.returncode < 0
            else f"exit code {res.returncode}", "log": str(log), "wall_s": wall, "load_before": load,
            "load_after": os.getloadavg()[0], "returncode": res.returncode,
            "child_peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


def _common(args: argparse.Namespace) -> list[str]:
    return ["--threads", str(args.threads), "--warmup", str(args.warmup), "--prompts", str(args.prompts),
            "--generations", str(args.generations), "--max-new-tokens", str(args.max_new_tokens)]


ARGS: argparse.Namespace


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _weighting_cost(args: argparse.Namespace, repeats: int = 200) -> dict[str, float]:
    """Seconds per step that ``token_weights`` takes in each mode: the only code of the step that the
    weighting mode changes (the rollout, the entropies and the region statistics are the same)."""
    import torch

    from restlit.config import load_config
    from restlit.objective import region_entropy_stats, token_weights
    from restlit.regions import Region

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    groups = []
    for _ in range(args.prompts):
        regions = torch.randint(0, len(Region), (args.generations, args.max_new_tokens), generator=g)
        mask = torch.ones(args.generations, args.max_new_tokens)
        entropy = torch.rand(args.generations, args.max_new_tokens, generator=g) * 3
        groups.append((regions, mask, entropy))
    stats = sum(region_entropy_stats(e, r, m) for r, m, e in groups)
    out = {}
    for mode in args.modes:
        cfg = load_config(CONFIG, _mode_overrides(mode)).objective.weights
        start = time.perf_counter()
        for _ in range(repeats):
            for r, m, _e in groups:
                token_weights(r, m, cfg, region_stats=stats, progress=0.5, step=1)
        out[mode] = (time.perf_counter() - start) / repeats
    return out


def _load_note(data: dict) -> str:
    """How busy the machine was while the steps ran (1-minute load averages at the steps' ends)."""
    loads = [x for res in [*(r for rs in data["restlit"].values() for r in rs), data.get("trl") or {}]
             for x in res.get("load", [])]
    meta = data["meta"]
    threads = meta.get("threads", 2)
    if loads and max(loads) <= threads + 0.5:
        return (f"Load average {min(loads):.1f} to {max(loads):.1f} at the steps' ends, i.e. the benchmark's own "
                f"{threads} threads: nothing else ran. On this shared machine, runs next to other jobs (load 4 to 6) "
                f"gave 2 to 7 times longer, erratic steps, so compare only runs with load near {threads}.")
    where = f"{min(loads):.1f} to {max(loads):.1f} at the steps' ends" if loads else (
        f"{meta.get('load_start', 0):.1f} at start, {meta.get('load_end', 0):.1f} at end")
    return (f"Machine shared with other work: load average {where} with {threads} threads of our own, so wall "
            f"times are inflated and noisy; rerun when it is idle.")


def _report(args: argparse.Namespace, data: dict) -> str:
    from benchmarks._results import markdown_table

    results, trl, meta = data["restlit"], data["trl"], data["meta"]
    modes = list(results)
    warmup = meta["warmup"]

    def timed(res_list: list[dict]) -> dict:
        out = {"times": [], "cpu": [], "steps": [], "peak_train": None, "peak": None}
        for res in res_list:
            if "error" in res:
                out["error"] = res["error"]
                out["peak"] = res.get("child_peak")
                continue
            out["times"] += res["times"][warmup:]
            out["cpu"] += res["cpu"][warmup:]
            out["steps"] += res["steps"][warmup:]
            if res["rss_after_step"]:
                out["peak_train"] = max(out["peak_train"] or 0, res["rss_after_step"][-1])
            out["peak"] = max(out["peak"] or 0, res["peak"])
        return out

    def gb(x: int | None) -> str:
        return f"{x / GB:.2f}" if x else "-"  # GiB

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    summary = {f"restlit {m}": timed(results[m]) for m in modes}
    if trl is not None:
        summary["TRL GRPOTrainer"] = timed([trl])
    t_trl = summary.get("TRL GRPOTrainer", {})
    trl_wall, trl_cpu = med(t_trl.get("times", [])), med(t_trl.get("cpu", []))
    uni = summary.get("restlit uniform", {})
    uni_wall, uni_cpu = med(uni.get("times", [])), med(uni.get("cpu", []))

    headers = ["variant", "timed steps", "median step s (wall)", "min / max s", "median step CPU s",
               "rollout s", "update s", "completion tokens", "peak RSS GiB, training", "peak RSS GiB, process",
               "TRL / this: wall, CPU", "this / uniform: wall, CPU"]
    table_rows = []
    for name, s in summary.items():
        wall, cpu = med(s["times"]), med(s["cpu"])
        rollout = _mean([x.get("time/rollout") for x in s["steps"]])
        update = _mean([x.get("time/update") for x in s["steps"]])
        length = _mean([x.get("completion/length") for x in s["steps"]])
        table_rows.append([
            name + (f" ({s['error']})" if s.get("error") else ""), len(s["times"]),
            f"{wall:.0f}" if wall else "-",
            f"{min(s['times']):.0f} / {max(s['times']):.0f}" if s["times"] else "-",
            f"{cpu:.0f}" if cpu else "-",
            f"{rollout:.0f}" if rollout is not None else "-", f"{update:.0f}" if update is not None else "-",
            f"{length:.0f}" if length is not None else "-",
            gb(s["peak_train"]), gb(s["peak"]),
            f"{trl_wall / wall:.2f}x, {trl_cpu / cpu:.2f}x" if (trl_wall and wall and trl_cpu and cpu) else "-",
            f"{wall / uni_wall:.2f}, {cpu / uni_cpu:.2f}"
            if (uni_wall and wall and uni_cpu and cpu and name.startswith("restlit")) else "-",
        ])
    table = markdown_table(headers, table_rows)

    goals = []
    # the goal is judged on what restlit ships: NAME+variant rows are diagnostics (see _mode_overrides)
    restlit_peaks = [(s["peak_train"], s["peak"]) for n, s in summary.items()
                     if n.startswith("restlit") and not _variant(n) and s["peak"]]
    if restlit_peaks:
        train_peak = max(p[0] or 0 for p in restlit_peaks)
        worst = max(p[1] for p in restlit_peaks)
        goals.append(f"peak RSS <= 3 GiB at 16 completions per step: **{'met' if worst <= 3 * GB else 'NOT met'}** "
                     f"({train_peak / GB:.2f} GiB by the end of the last training step, {worst / GB:.2f} GiB "
                     f"for the whole process)")
    ent = summary.get("restlit entropy")
    if ent and ent["times"] and trl_wall:
        speedup = trl_wall / med(ent["times"])
        cpu_speedup = trl_cpu / med(ent["cpu"])
        goals.append(f"step time >= 5x faster than TRL: **{'met' if speedup >= 5 else 'NOT met'}** "
                     f"({speedup:.2f}x wall, {cpu_speedup:.2f}x CPU time, entropy weights)")
    elif trl is not None:
        goals.append(f"step time >= 5x faster than TRL: not measured (TRL run: {trl.get('error', 'no timed steps')})")
    machine = meta.get("machine")
    if machine and ent and ent["times"]:
        per_step = meta["completions"] // meta["prompts"]
        lims = []
        per_process = max(1, len(ent["steps"]) // max(1, len(results["entropy"])))  # the same steps in each process
        for i, st in enumerate(ent["steps"]):
            first = (warmup + i % per_process) * meta["prompts"]
            ptok = meta["prompt_tokens"][first : first + meta["prompts"]] or meta["prompt_tokens"][: meta["prompts"]]
            lims.append(step_limit(machine, ptok, meta["completions"], st.get("completion/length") or 1.0))
        lim = {k: statistics.median(x[k] for x in lims) for k in lims[0]}
        wall = med(ent["times"])
        rollout = _mean([x.get("time/rollout") for x in ent["steps"]])
        update = _mean([x.get("time/update") for x in ent["steps"]])
        goals.append(
            f"step within 2x of this machine's limit: **{'met' if wall <= 2 * lim['step'] else 'NOT met'}** "
            f"({wall / lim['step']:.1f}x: {wall:.0f} s against a limit of {lim['step']:.1f} s = rollout "
            f"{lim['rollout']:.1f} s + update {lim['update']:.1f} s; measured rollout {rollout:.0f} s = "
            f"{rollout / lim['rollout']:.1f}x its limit, update {update:.0f} s = {update / lim['update']:.1f}x; "
            f"fp32 matmul {machine['gflops']:.0f} GFLOP/s, memory {machine['gbps']:.1f} GB/s at "
            f"{meta['threads']} threads, measured after the runs; {machine['params'] / 1e6:.1f}M parameters, "
            f"{per_step} completions per prompt, `step_limit` in this file)")
    cost = meta.get("weighting_s")
    upd = data.get("update") or {}
    upd_rows, upd_ratio = [], None
    if upd.get("updates"):
        by_mode = {m: [u for u in upd["updates"] if u["mode"] == m] for m in modes}
        for m, us in by_mode.items():
            if us:
                upd_rows.append([m, len(us), f"{med([u['wall'] for u in us]):.1f}", f"{med([u['cpu'] for u in us]):.1f}",
                                 " / ".join(f"{u['wall']:.1f}" for u in us)])
        if by_mode.get("entropy") and by_mode.get("uniform"):
            upd_ratio = (med([u["wall"] for u in by_mode["entropy"]]) / med([u["wall"] for u in by_mode["uniform"]]),
                         med([u["cpu"] for u in by_mode["entropy"]]) / med([u["cpu"] for u in by_mode["uniform"]]))
    elif upd.get("error"):
        upd_rows.append([f"failed: {upd['error']}", 0, "-", "-", "-"])
    if upd_ratio is not None:
        extra = ""
        if cost:
            extra = (f"; `token_weights` itself, the only code the mode changes, takes {cost['entropy'] * 1e3:.2f} ms "
                     f"per step for `entropy` vs {cost['uniform'] * 1e3:.3f} ms for `uniform`")
        ok = upd_ratio[0] <= 1.05
        goals.append(f"`entropy` within 5% of `uniform`: **{'met' if ok else 'NOT met'}** on the update, where the "
                     f"mode acts (in-process check below: entropy / uniform = {upd_ratio[0]:.3f} wall, "
                     f"{upd_ratio[1]:.3f} CPU time{extra}); the rollout samples the same completions for both "
                     f"modes (same seeds and weights at step 0).")
    elif ent and ent["times"] and uni_wall:
        ratio, cpu_ratio = med(ent["times"]) / uni_wall, med(ent["cpu"]) / uni_cpu
        extra = ""
        if cost:
            extra = (f"; the only code the mode changes, `token_weights`, takes {cost['entropy'] * 1e3:.2f} ms "
                     f"per step for `entropy` vs {cost['uniform'] * 1e3:.3f} ms for `uniform`, "
                     f"{(cost['entropy'] - cost['uniform']) / uni_wall * 100:.4f}% of a step")
        goals.append(f"`entropy` within 5% of `uniform`: **{'met' if ratio <= 1.05 else 'NOT met'}** "
                     f"(entropy / uniform = {ratio:.2f} wall, {cpu_ratio:.2f} CPU time; both runs sample the same "
                     f"completions, so the spread is the shared machine's noise{extra})")

    skipped = sum(int(x.get("skipped") or 0) for n, s in summary.items() if n.startswith("restlit")
                  for x in s["steps"])
    tokens = meta["prompt_tokens"]
    trl_info = ""
    if trl is not None and "error" not in trl:
        trl_info = (f" TRL {trl.get('trl_version')}: micro-batch {meta['trl_micro_batch']} x "
                    f"{meta['completions'] // meta['trl_micro_batch']} accumulation steps, one `generate` of "
                    f"{meta['completions']} completions per optimizer step; TRL's chat-templated prompt tokens "
                    f"differ from restlit's on {trl.get('prompt_token_mismatches')} prompts.")
    text = (
        f"SmolLM2-135M-Instruct (embedded), float32, {meta['threads']} threads; ToolRL prompts of `rlla_sft.json` "
        f"in the order restlit's data module serves them (the same {len(tokens)} prompts, steps 0.."
        f"{len(tokens) // meta['prompts'] - 1}, on every side: {min(tokens)} to {max(tokens)} tokens, mean "
        f"{statistics.mean(tokens):.0f}), {meta['prompts']} prompts x {meta['completions'] // meta['prompts']} "
        f"completions per step, up to {meta['max_new_tokens']} new tokens, temperature 1.\n\n"
        f"Reward on both sides: the same hash of the completion text in [0, 1) (`bench_reward`), so every "
        f"group has reward variance and every step runs the full update ({skipped} restlit steps skipped). "
        f"Both sides: rollout of the {meta['completions']} completions, policy forward + backward over prompt + "
        f"completion, grad clip 1.0, one AdamW step; no reference model, no KL (TRL `beta=0.0`), one PPO "
        f"epoch, no old-log-prob pass.{trl_info}\n\n"
        f"Step time: one training step (restlit `on_train_batch_start` -> `on_train_batch_end`, TRL "
        f"`on_step_begin` -> `on_step_end`), {warmup} untimed warm-up step(s); CPU s: the process's CPU time "
        f"(all threads) over the same span. Rollout / update: restlit's `time/rollout`, `time/update` "
        f"(`metrics.csv`). Peak RSS: the process's `ru_maxrss` at the end of its last training step, and at "
        f"exit (restlit's then includes `last.ckpt` and the `final/` export). {_load_note(data)} Whole benchmark "
        f"{meta['minutes']:.0f} min."
    )
    detail = []
    for name, res_list in [(f"restlit {m}", results[m]) for m in modes] + [("TRL GRPOTrainer", [trl] if trl else [])]:
        for res in res_list:
            if "error" in res:
                continue
            for i, wall in enumerate(res["times"]):
                st = res["steps"][i] if i < len(res["steps"]) else {}
                load = res.get("load", [])
                detail.append([name, i, f"{wall:.0f}", f"{res['cpu'][i]:.0f}",
                               f"{st['time/rollout']:.0f}" if st.get("time/rollout") is not None else "-",
                               f"{st['time/update']:.0f}" if st.get("time/update") is not None else "-",
                               f"{st['completion/length']:.0f}" if st.get("completion/length") is not None else "-",
                               f"{load[i]:.1f}" if i < len(load) else "-"])
    body = text + "\n\n" + table
    if detail:
        body += ("\n\nEach step (the same prompts at the same step index on every side; load = 1-minute load "
                 "average at the step's end, where recorded):\n\n"
                 + markdown_table(["variant", "step", "wall s", "CPU s", "rollout s", "update s", "completion tokens",
                                   "load"], detail))
    if upd_rows:
        ptok = upd.get("prompt_tokens") or []
        body += ("\n\nEntropy vs uniform, in one process: the real `RestModule` update under a Trainer on the "
                 f"same 4 groups (step-0 prompts of {', '.join(map(str, ptok))} tokens; 4 completions each of "
                 f"{upd.get('completion_tokens')} tokens cut from the reference answers, so with real regions; "
                 "random entropies and advantages), one untimed warm-up update, then the modes alternated ABBA:\n\n"
                 + markdown_table(["mode", "updates", "median update s (wall)", "median update CPU s",
                                   "each update s"], upd_rows))
    body += _variants(summary, med, gb)
    return body + "\n\nGoals:\n\n" + "\n".join(f"- {g}" for g in goals)


VARIANTS = {"plain": "without packed weights (`rollout.pack_weights: false`)",
            "unfused": "decoding through the model's forward on packed weights (`restlit.decoding` off, restlit before it)",
            "untrimmed": "keeping freed heap pages (`restlit.kernels.memory.release` off, restlit before it)",
            "mmap1m": "with glibc's mmap threshold at 1 MiB (`MALLOC_MMAP_THRESHOLD_=1048576`)",
            "mmap2m": "with glibc's mmap threshold at 2 MiB (`MALLOC_MMAP_THRESHOLD_=2097152`)"}
MMAP_VARIANTS = {"mmap1m": 2**20, "mmap2m": 2 * 2**20}
# variants that change settings (benchmarks/bench_lora.py compares them); the KL coefficient only
# makes the step load and run the reference (its value does not change the cost)
SETTING_VARIANTS = {"lora": ["model.lora.r=16"], "kl": ["objective.loss.kl_coef=0.001"],
                    "lora-kl": ["model.lora.r=16", "objective.loss.kl_coef=0.001"]}
VARIANTS.update({
    "lora": "with LoRA adapters, r=16 on every linear layer of attention and MLP (`model.lora.r=16`)",
    "kl": "with a KL term (`objective.loss.kl_coef=0.001`: a reference copy of the model)",
    "lora-kl": "with LoRA r=16 and a KL term (the reference is the policy with its adapters disabled)",
})


def _per_step(res: dict, key: str) -> str:
    """``37 / 36``: metric ``key`` of each timed step."""
    return " / ".join(f"{x[key]:.0f}" for x in res["steps"] if x.get(key) is not None)


def _variants(summary: dict, med, gb) -> str:
    """One sentence per ``NAME+variant`` row against its ``NAME`` row of the same run."""
    lines = []
    for name, s in summary.items():
        base_name, variant = name.partition("+")[0], _variant(name)
        base = summary.get(base_name)
        if not variant or base is None or not s["times"] or not base["times"]:
            continue
        lines.append(f"{base_name} against the same run {VARIANTS[variant]}: peak RSS {gb(base['peak'])} "
                     f"vs {gb(s['peak'])} GiB; median step {med(base['times']):.0f} vs {med(s['times']):.0f} s "
                     f"(rollout {_per_step(base, 'time/rollout')} vs {_per_step(s, 'time/rollout')} s, update "
                     f"{_per_step(base, 'time/update')} vs {_per_step(s, 'time/update')} s per step).")
    return "\n\n" + "\n\n".join(lines) if lines else ""


def main() -> None:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trl-python", default=os.environ.get("TRL_PYTHON"),
                   help="python of a venv with trl installed (default: $TRL_PYTHON)")
    p.add_argument("--skip-trl", action="store_true", help="time restlit only")
    p.add_argument("--modes", nargs="+", default=["entropy", "uniform"],
                   help="restlit weighting modes; NAME+plain: without packed weights (rollout.pack_weights=false); "
                        "NAME+unfused: decoding through the model's forward (restlit.kernels.decoding off); "
                        "NAME+untrimmed: freed heap pages kept (restlit.kernels.memory.release off); "
                        "NAME+mmap1m / NAME+mmap2m: MALLOC_MMAP_THRESHOLD_ at 1 / 2 MiB in the child's environment")
    p.add_argument("--rounds", type=int, default=1, help="restlit processes per mode, interleaved")
    p.add_argument("--steps", type=int, default=2, help="timed restlit steps per process")
    p.add_argument("--trl-steps", type=int, default=2, help="timed TRL steps")
    p.add_argument("--warmup", type=int, default=0,
                   help="untimed first steps per process (steps take minutes here: first-call overheads are "
                        "negligible, and steps 0, 1 ... are then the same prompts on both sides)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--generations", type=int, default=4, help="completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--trl-micro-batch", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-record", action="store_true", help="print only; do not update RESULTS.md")
    p.add_argument("--keep", help="keep run directories, child logs and summary.json in this directory")
    p.add_argument("--report-only", metavar="DIR",
                   help="no runs: rebuild the table from DIR/summary.json (a --keep directory)")
    p.add_argument("--update-reps", type=int, default=2,
                   help="updates per mode in the in-process entropy-vs-uniform check (0: skip it)")
    p.add_argument("--parts", nargs="+", choices=["restlit", "trl", "update"], default=["restlit", "trl", "update"],
                   help="what to run; with --keep, the other parts' earlier results in DIR/summary.json are kept")
    p.add_argument("--worker", choices=["restlit", "trl", "update"], help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--prompts-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    ARGS = args
    unknown = [m for m in args.modes if _variant(m) and _variant(m) not in VARIANTS]
    if unknown:
        p.error(f"unknown variant in {', '.join(unknown)}: NAME+VARIANT takes {', '.join(VARIANTS)}")
    if args.worker == "restlit":
        sys.path.insert(0, str(ROOT))
        worker_restlit(args)
        return
    if args.worker == "trl":
        worker_trl(args)
        return
    if args.worker == "update":
        sys.path.insert(0, str(ROOT))
        worker_update(args)
        return
    if args.skip_trl and "trl" in args.parts:
        args.parts.remove("trl")
    if args.update_reps <= 0 and "update" in args.parts:
        args.parts.remove("update")
    if not args.report_only and "trl" in args.parts and not args.trl_python:
        p.error("give --trl-python (or $TRL_PYTHON), or --skip-trl")

    sys.path.insert(0, str(ROOT))
    from benchmarks._results import record

    tmp_ctx = None
    if args.report_only:
        work = Path(args.report_only).resolve()
    elif args.keep:
        work = Path(args.keep).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp_ctx = tempfile.TemporaryDirectory(prefix="bench_step.")
        work = Path(tmp_ctx.name)

    if args.report_only:
        data = json.loads((work / "summary.json").read_text())
        args.modes = list(data["restlit"])
    else:
        data = _run_all(args, work)
    data["meta"].setdefault("weighting_s", _weighting_cost(args))
    (work / "summary.json").write_text(json.dumps(data, indent=1))
    body = _report(args, data)
    print()
    print(body)
    if not args.no_record:
        cmd = "python benchmarks/bench_step.py" + (" --trl-python /tmp/trlvenv/bin/python" if data["trl"] is not None
                                                   else " --skip-trl")
        if args.modes != ["entropy", "uniform"]:
            cmd += " --modes " + " ".join(args.modes)
        if args.trl_steps != 2 and data["trl"] is not None:
            cmd += f" --trl-steps {args.trl_steps}"
        if args.parts != ["restlit", "trl", "update"]:
            cmd += " --parts " + " ".join(args.parts)
        record("bench_step", "Training step: restlit vs TRL GRPOTrainer (CPU)", body, cmd)
    if tmp_ctx is not None:
        tmp_ctx.cleanup()


def _machine(threads: int, model_dir: str) -> dict:
    """This machine's fp32 matmul rate and memory bandwidth at ``threads`` (``bench_kernels``'
    measurement, taken after the children, so on the same machine state) and the model's shape."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from benchmarks.bench_kernels import machine_limits

    torch.set_num_threads(threads)
    gflops, gbps = machine_limits(torch)
    cfg = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    kv_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    return {"gflops": gflops, "gbps": gbps, "params": params, "kv_bytes_per_token": kv_bytes}


def step_limit(machine: dict, prompt_tokens: list[int], completions: int, mean_length: float) -> dict[str, float]:
    """The seconds a W step cannot beat on this machine: useful FLOPs over the measured matmul
    rate, and decoding's bytes over the measured bandwidth. ``N`` parameters (the tied LM head
    once); each prompt counted once (its ``G`` completions share it).

    - rollout = ``2 N P / rate`` (prefill of the ``P`` prompt tokens) + ``L`` decoding steps, each
      the larger of ``2 N G B / rate`` and (every weight once + the keys and values as stored:
      each prompt once, the completions' own half-way on average) ``/ bandwidth``;
    - update = ``6 N (P + G B L) / rate`` (forward and backward; checkpointing's recompute not
      counted: it is not useful work).
    """
    n, rate, bw = machine["params"], machine["gflops"] * 1e9, machine["gbps"] * 1e9
    p, rows = sum(prompt_tokens), completions
    decode_bytes = 4 * n + machine["kv_bytes_per_token"] * (p + rows * mean_length / 2)
    decode = mean_length * max(2 * n * rows / rate, decode_bytes / bw)
    rollout = 2 * n * p / rate + decode
    update = 6 * n * (p + rows * mean_length) / rate
    return {"rollout": rollout, "update": update, "step": rollout + update, "decode_step_ms": decode / mean_length * 1e3}


def _run_all(args: argparse.Namespace, work: Path) -> dict:
    """Run ``args.parts``; with an earlier ``summary.json`` in ``work``, keep the parts not rerun."""
    previous = work / "summary.json"
    data = json.loads(previous.read_text()) if previous.is_file() else {"restlit": {}, "trl": None, "meta": {}}
    data.setdefault("update", None)
    meta = data["meta"]
    started = time.time()
    meta.pop("weighting_s", None)
    if "load_start" not in meta or "restlit" in args.parts:
        meta["load_start"] = os.getloadavg()[0]
    trl_steps = args.trl_steps
    rows, model_dir = _prompt_rows(argparse.Namespace(**{**vars(args), "steps": max(args.steps, trl_steps)}))
    prompt_tokens = [r["restlit_prompt_tokens"] for r in rows]
    prompts_file = work / "prompts.json"
    n_trl = (args.warmup + trl_steps) * args.prompts
    prompts_file.write_text(json.dumps({"model_dir": model_dir, "rows": rows[:n_trl]}))
    print(f"prompts: {len(rows)} (tokens min {min(prompt_tokens)}, mean {statistics.mean(prompt_tokens):.0f}, "
          f"max {max(prompt_tokens)}); model {model_dir}", flush=True)

    if "restlit" in args.parts:
        results: dict[str, list[dict]] = {m: [] for m in args.modes}
        for rnd in range(args.rounds):
            modes = args.modes if rnd % 2 == 0 else list(reversed(args.modes))
            for mode in modes:
                out = work / f"restlit-{mode}-{rnd}"
                cmd = [sys.executable, __file__, "--worker", "restlit", "--mode", mode, "--out", str(out),
                       "--steps", str(args.steps), *_common(args)]
                res = _run_child(cmd, work / f"restlit-{mode}-{rnd}.log", _child_env(mode))
                results[mode].append(res)
                print(f"restlit {mode} round {rnd}: " + json.dumps({k: v for k, v in res.items() if k != "steps"}),
                      flush=True)
        data["restlit"] = results
    if "trl" in args.parts:
        cmd = [args.trl_python, __file__, "--worker", "trl", "--out", str(work / "trl"),
               "--prompts-file", str(prompts_file), "--steps", str(trl_steps),
               "--trl-micro-batch", str(args.trl_micro_batch), *_common(args)]
        data["trl"] = _run_child(cmd, work / "trl.log")
        print("trl: " + json.dumps({k: v for k, v in data["trl"].items() if k != "steps"}), flush=True)
    if "update" in args.parts:
        cmd = [sys.executable, __file__, "--worker", "update", "--mode", ",".join(args.modes),
               "--out", str(work / "update"), "--steps", str(args.update_reps), *_common(args)]
        data["update"] = _run_child(cmd, work / "update.log")
        print("update: " + json.dumps(data["update"]), flush=True)
    meta["machine"] = _machine(args.threads, model_dir)
    meta.update({
        "warmup": args.warmup, "threads": args.threads, "prompts": args.prompts,
        "completions": args.prompts * args.generations, "max_new_tokens": args.max_new_tokens,
        "trl_micro_batch": args.trl_micro_batch, "prompt_tokens": prompt_tokens,
        "load_end": os.getloadavg()[0], "minutes": meta.get("minutes", 0.0) + (time.time() - started) / 60,
    })
    return data


if __name__ == "__main__":
    main()
