"""Runs the testbed through restlit's own commands: ``restlit prepare`` on the generated chat
records, ``restlit sft`` of a random-init tiny Llama to partial competence, ``restlit ablate`` of the
arms from that start, and ``restlit diagnose variance`` at checkpoints of the ``grpo`` arm.

Each command runs as its own process (``python -m restlit.cli.main ...``), exactly as a user types
it; the driver only writes the task files, the tokenizer and the YAML config the commands read.
Layout of ``OUT``::

    tokenizer/                  the byte-level BPE tokenizer (shared by every think length)
    L<L>/raw.jsonl              the generated records (think length L words)
    L<L>/data/                  restlit prepare's output
    L<L>/config.yaml            the config every command of this length reads
    L<L>/sft-stage<k>/          restlit sft's stages, each scored by restlit eval (sft-stages.json)
    L<L>/sft/final              the SFT start (a link to the chosen stage's model)
    L<L>/ablation/s<seed>/      restlit ablate's output for one seed (ablation.json, <arm>/seed0/)
    L<L>/variance/step<S>/      restlit diagnose variance at the grpo arm's (seed 0) step S
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from restlit.experiments.testbed.tasks import make_records, write_tasks
from restlit.experiments.testbed.tokenizer import build_tokenizer

ARMS = {
    "grpo": ["objective.weights.mode=uniform"],
    "rest": ["objective.weights.mode=entropy", "objective.curriculum.by=step"],
    "top-entropy": ["objective.weights.mode=top-entropy"],
    "entropy-no-curriculum": ["objective.weights.mode=entropy", "objective.curriculum.by=none"],
    "static": ["objective.weights.mode=static"],
}


@dataclass(frozen=True)
class Size:
    """How big a testbed run is. ``think_lengths`` in filler words (about one BPE token each)."""

    think_lengths: tuple[int, ...] = (0, 64)
    arms: tuple[str, ...] = ("grpo", "rest", "top-entropy")
    seeds: int = 6
    steps: int = 100
    eval_every: int = 25
    eval_items: int = 128
    val_fraction: float = 0.15
    sft_steps: int = 60
    sft_stages: int = 8
    sft_target: float = 0.3
    sft_batch: int = 32
    sft_lr: float = 3e-3
    lr: float = 3e-4
    prompts_per_step: int = 4
    completions: int = 8
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    vocab: int = 512
    variance_batches: int = 32
    variance_steps: tuple[int, ...] = (0, 50, 100)
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def seed_list(self) -> list[int]:
        return list(range(self.seeds))

    def max_new_tokens(self, think: int) -> int:
        """The generation budget: the think part with room to spare, and the call."""
        return int(1.5 * think) + 48


def config_dict(size: Size, think: int, root: Path) -> dict[str, Any]:
    """The YAML config of one think length (model, data, rollout, optimiser, SFT, ablation)."""
    d = root / f"L{think}"
    tokens = size.max_new_tokens(think)
    return {
        "model": {"path": str(d / "sft" / "final"), "tokenizer": str(root / "tokenizer"), "init": "pretrained",
                  "architecture": {"model_type": "llama", "hidden_size": size.hidden,
                                   "intermediate_size": 4 * size.hidden, "num_hidden_layers": size.layers,
                                   "num_attention_heads": size.heads, "num_key_value_heads": size.heads,
                                   "max_position_embeddings": 512, "tie_word_embeddings": True}},
        "data": {"prepared": str(d / "data"), "cache_dir": str(d / "cache"), "max_prompt_tokens": 256},
        "rollout": {"engine": "hf", "n": size.completions, "max_new_tokens": tokens, "temperature": 1.0,
                    "prompt_batch_size": size.prompts_per_step},
        "objective": {"weights": {"mode": "entropy"}},
        "optim": {"lr": size.lr, "grad_clip": 1.0},
        "trainer": {"max_steps": size.steps, "prompts_per_step": size.prompts_per_step,
                    "checkpoint_every": max(1, min(s for s in size.variance_steps if s > 0) if any(
                        s > 0 for s in size.variance_steps) else size.steps)},
        "sft": {"max_steps": size.sft_steps, "epochs": 1000, "batch_size": size.sft_batch, "lr": size.sft_lr},
        "logging": {"progress_bar": False, "tensorboard": False},
        "ablation": {"eval_every": size.eval_every, "eval_limit": size.eval_items, "eval_tokens": tokens,
                     "suites": ["heldout"]},
        "output_dir": str(d / "run"),
        **size.extra,
    }


def restlit(args: Sequence[str], *, threads: int = 1, log: Callable[[str], None] = print,
            logfile: Path | None = None) -> None:
    """Run ``restlit ARGS`` as its own process (``OMP_NUM_THREADS=threads``); raises on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    cmd = [sys.executable, "-m", "restlit.cli.main", *map(str, args)]
    log("$ restlit " + " ".join(map(str, args)))
    out = open(logfile, "a") if logfile else None  # noqa: SIM115
    try:
        proc = subprocess.run(cmd, env=env, stdout=out or subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              check=False)
    finally:
        if out:
            out.close()
    if proc.returncode:
        tail = proc.stdout[-3000:] if proc.stdout else (logfile.read_text()[-3000:] if logfile else "")
        raise RuntimeError(f"restlit {' '.join(map(str, args[:2]))} failed ({proc.returncode}):\n{tail}")


def setup(root: Path, size: Size, *, log: Callable[[str], None] = print) -> None:
    """Write the tokenizer and, per think length, the records, the prepared data and the config."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "size.json").write_text(json.dumps(asdict(size), indent=1) + "\n")
    if not (root / "tokenizer").is_dir():
        records = [r for think in size.think_lengths for r in make_records(think, seed=think)]
        build_tokenizer(records, root / "tokenizer", size.vocab)
    for think in size.think_lengths:
        d = root / f"L{think}"
        if not (d / "raw.jsonl").is_file():
            write_tasks(d / "raw.jsonl", think, seed=think)
        if not (d / "data" / "manifest.json").is_file():
            restlit(["prepare", d / "raw.jsonl", "-o", d / "data", "--format", "chat",
                     "--val-fraction", size.val_fraction], threads=size.threads, log=log)
        (d / "config.yaml").write_text(yaml.safe_dump(config_dict(size, think, root), sort_keys=False))


def sft(root: Path, size: Size, think: int, *, log: Callable[[str], None] = print) -> Path:
    """``restlit sft`` to partial competence: stages of ``size.sft_steps`` steps (the first from a
    random init, each next from the previous stage's model), each scored by ``restlit eval`` on the
    held-out items, until the exact match reaches ``size.sft_target`` or ``size.sft_stages`` stages
    are done. ``L<think>/sft/final`` is then the last stage's model (the RL start); the exact match
    per stage is kept in ``L<think>/sft-stages.json``."""
    d = root / f"L{think}"
    final = d / "sft" / "final"
    if (final / "config.json").is_file():
        return final
    stages_file = d / "sft-stages.json"
    stages = json.loads(stages_file.read_text()) if stages_file.is_file() else []
    tokens = size.max_new_tokens(think)
    while True:
        k = len(stages)
        stage = d / f"sft-stage{k}"
        start = ["--set", "model.init=random", "--set", f"model.path={root / 'tokenizer'}"] if k == 0 else [
            "--set", f"model.path={d / f'sft-stage{k - 1}' / 'sft' / 'final'}"]
        if not (stage / "sft" / "final" / "config.json").is_file():
            restlit(["sft", "-c", d / "config.yaml", *start, "--set", f"output_dir={stage}"],
                    threads=size.threads, log=log, logfile=d / "sft.log")
        restlit(["eval", "--suite", "heldout", "--data", d / "data", "--model", stage / "sft" / "final", "--limit",
                 size.eval_items, "--max-new-tokens", tokens, "--batch-size", 16, "-o", stage / "eval", "--overwrite"],
                threads=size.threads, log=log, logfile=d / "sft.log")
        summary = json.loads((stage / "eval" / "eval.json").read_text())["summary"]["heldout"]
        steps = (stages[-1]["steps"] if stages else 0) + size.sft_steps  # a resumed run may use other stage sizes
        stages.append({"stage": k, "steps": steps, "exact_match": summary["exact_match"]})
        stages_file.write_text(json.dumps(stages, indent=1) + "\n")
        log(f"L={think} SFT stage {k}: {steps} steps, held-out exact match {summary['exact_match']:.3f}")
        if summary["exact_match"] >= size.sft_target or len(stages) >= size.sft_stages:
            break
    final.parent.mkdir(parents=True, exist_ok=True)
    os.symlink((stage / "sft" / "final").resolve(), final)
    return final


def ablate(root: Path, size: Size, think: int, seed: int, *, log: Callable[[str], None] = print) -> Path:
    """``restlit ablate`` of ``size.arms`` from the SFT start for one seed (``trainer.seed = seed``)
    into ``L<think>/ablation/s<seed>``; returns its ``ablation.json``. One ablation per seed, so
    that every arm of a seed finishes together and a run cut short stays paired. The start
    model's score is the same for every seed: it is copied from the first seed's ablation."""
    d = root / f"L{think}"
    out = d / "ablation" / f"s{seed}"
    first = d / "ablation" / f"s{size.seed_list()[0]}" / "start" / "evals.jsonl"
    if first.is_file() and not (out / "start" / "evals.jsonl").is_file():
        (out / "start").mkdir(parents=True, exist_ok=True)
        (out / "start" / "evals.jsonl").write_text(first.read_text())
    if all((out / arm / "seed0" / "result.json").is_file() for arm in size.arms):
        return out / "ablation.json"  # finished earlier
    arms = [f"{a}:{','.join(ARMS[a])}" for a in size.arms]
    restlit(["ablate", "-c", d / "config.yaml", "--seeds", 1, "-o", out, "--set", f"trainer.seed={seed}",
             *[x for a in arms for x in ("--arm", a)]], threads=size.threads, log=log, logfile=d / f"ablate-s{seed}.log")
    return out / "ablation.json"


def checkpoint_model(root: Path, think: int, step: int, arm: str = "grpo", seed: int = 0) -> Path:
    """A model directory of ``arm``'s seed ``seed`` at ``step``: the SFT start at 0, ``final/`` at the
    last step, otherwise the Lightning checkpoint ``step=<step>.ckpt`` written out once beside it."""
    d = root / f"L{think}"
    if step == 0:
        return d / "sft" / "final"
    run = d / "ablation" / f"s{seed}" / arm / "seed0"
    out = run / f"model-step{step}"
    if (out / "config.json").is_file():
        return out
    ckpt = run / "checkpoints" / f"step={step}.ckpt"
    if not ckpt.is_file():
        return run / "final"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = d / "sft" / "final"
    model = AutoModelForCausalLM.from_pretrained(start)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(start).save_pretrained(out)
    return out


def variance(root: Path, size: Size, think: int, *, log: Callable[[str], None] = print) -> Path:
    """``restlit diagnose variance`` at each of ``size.variance_steps`` of the ``grpo`` arm's seed 0
    (``size.variance_batches`` rollout batches, exact gradients, the entropy weights' curriculum
    at that step's progress), into ``L<think>/variance/step<S>``."""
    d = root / f"L{think}"
    for step in size.variance_steps:
        out = d / "variance" / f"step{step}"
        if (out / "variance.json").is_file():
            continue
        model = checkpoint_model(root, think, step)
        restlit(["diagnose", "variance", "-c", d / "config.yaml", "--checkpoint", model, "-k",
                 size.variance_batches, "--sketch-dim", 0, "--step", max(1, step),
                 "--progress", round(min(1.0, step / max(1, size.steps - 1)), 4), "-o", out],
                threads=size.threads, log=log, logfile=d / "variance.log")
    return d / "variance"


def tasks(size: Size) -> list[tuple[str, int, int]]:
    """The work in the order it should run: ``(kind, think, seed)`` with kind ``sft``, ``ablate`` or
    ``variance``: length by length, the SFT, then every seed's ablation (all arms of a seed
    together), then the variance diagnostic, so that a run cut short has lost think lengths before
    it loses seeds, and never leaves an arm without its paired seeds."""
    out = []
    for think in size.think_lengths:
        out.append(("sft", think, 0))
        out += [("ablate", think, seed) for seed in size.seed_list()]
        if size.variance_batches:
            out.append(("variance", think, 0))
    return out


def run_task(root: Path, size: Size, task: tuple[str, int, int], *, log: Callable[[str], None] = print) -> None:
    kind, think, seed = task
    if kind == "sft":
        sft(root, size, think, log=log)
    elif kind == "ablate":
        ablate(root, size, think, seed, log=log)
    else:
        variance(root, size, think, log=log)


__all__ = ["ARMS", "Size", "ablate", "checkpoint_model", "config_dict", "restlit", "run_task", "setup", "sft",
           "tasks", "variance"]
