"""Building and running a ``fit`` (ResT) or ``sft`` run from a :class:`RunConfig`.

The CLI commands are thin wrappers over :func:`fit` and :func:`sft`, so tests and notebooks run
exactly what users run. A run directory holds ``config.yaml`` (the resolved config),
``metrics.csv`` (Lightning's CSV logger), ``checkpoints/`` and, at the end, ``final/`` (the policy
and tokenizer, ``save_pretrained``, loadable with ``model.path: RUN/final``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from restlit.config import RunConfig, save_config
from restlit.models import load_policy, load_tokenizer


class AtomicCheckpointIO(TorchCheckpointIO):
    """Streams each checkpoint into a temporary file beside its target and renames it into place:
    a run killed while saving never leaves a truncated checkpoint behind. Lightning's own writer
    serialises the whole checkpoint into memory first (weights + optimizer state, then a copy of
    those bytes), which doubled a small model's peak memory; this one never holds it twice."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options is not supported by restlit's checkpoint writer")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def release_large_frees() -> None:
    """Make freed tensors of 4 MiB and more go back to the operating system at once (Linux, glibc).

    glibc serves large allocations with their own mappings, but raises that threshold up to 32 MiB
    as soon as such a block is freed; from then on the rollout's and the update's activations,
    logits and gradients come from the heap, which keeps their freed pages and adds them to the next
    phase's peak. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``) keeps the peak closer to what
    is live; ``benchmarks/bench_step.py`` shows no cost in step time.
    A ``MALLOC_MMAP_THRESHOLD_`` set in the environment wins; elsewhere this does nothing."""
    if sys.platform != "linux" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 4 * 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl, ...): leave the allocator alone
        pass


def build_tokenizer_and_policy(config: RunConfig) -> tuple[Any, Any]:
    """The tokenizer and the policy that ``config.model`` describes."""
    m = config.model
    tokenizer = load_tokenizer(m.tokenizer or m.path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = load_policy(m.path, init=m.init, architecture=m.architecture, dtype=m.dtype, tokenizer=tokenizer,
                         seed=m.seed)
    if m.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return tokenizer, policy


def _loggers(config: RunConfig, run_dir: Path) -> list[Any]:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = []
    if config.logging.csv:
        loggers.append(CSVLogger(run_dir, name="", version=""))
    has_tb = any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX"))
    if config.logging.tensorboard and has_tb:
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    return loggers


def make_trainer(config: RunConfig, run_dir: Path, *, max_steps: int, checkpoints: bool = True,
                 gradient_clip_val: float | None = None, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A Lightning Trainer with the config's hardware settings, loggers, progress bar, and (with
    ``checkpoints``) atomic checkpoints every ``trainer.checkpoint_every`` steps plus ``last.ckpt``;
    ``callbacks`` are added (``restlit ablate`` scores the policy during training with one)."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    t = config.trainer
    callbacks = list(callbacks)
    if checkpoints:
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="{step}",
                                         every_n_train_steps=max(1, t.checkpoint_every), save_top_k=-1,
                                         save_last=True))
    if config.logging.progress_bar:
        callbacks.append(RichProgressBar())
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, precision=t.precision,
        max_steps=max_steps, max_epochs=-1, log_every_n_steps=t.log_every_n_steps,
        logger=_loggers(config, run_dir) or False, callbacks=callbacks,
        enable_checkpointing=checkpoints, enable_progress_bar=config.logging.progress_bar,
        use_distributed_sampler=False, num_sanity_val_steps=0,
        val_check_interval=t.val_every or None, limit_val_batches=1.0 if t.val_every else 0,
        plugins=[AtomicCheckpointIO()] if checkpoints else None, default_root_dir=run_dir,
        enable_model_summary=False, gradient_clip_val=gradient_clip_val,
    )


def export_final(trainer: L.Trainer, module: Any, tokenizer: Any, run_dir: Path, out: Path | None = None) -> Path:
    """Save the trained policy and its tokenizer to ``RUN/final`` (or ``out``) with ``save_pretrained``.

    The weights come from ``strategy.lightning_module_state_dict()``, which every rank calls (under
    FSDP it gathers the full parameters); rank 0 writes."""
    state = trainer.strategy.lightning_module_state_dict()
    out = out or run_dir / "final"
    if trainer.is_global_zero:
        prefix = "policy."
        policy_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        module.policy.save_pretrained(out, state_dict=policy_state)
        tokenizer.save_pretrained(out)
    trainer.strategy.barrier()
    return out


def fit(config: RunConfig, *, resume: bool = False, reward_fn: Any = None,
        callbacks: Sequence[L.Callback] = ()) -> Path:
    """Run ResT training as configured; returns the run directory. ``reward_fn`` replaces
    ToolRL's reward (see :class:`restlit.module.RestModule`); ``callbacks`` join the trainer's."""
    from restlit.data import ToolUseDataModule
    from restlit.module import RestModule

    release_large_frees()

    run_dir = Path(config.output_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {last}")
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    tokenizer, policy = build_tokenizer_and_policy(config)
    reference = None
    if config.objective.loss.kl_coef > 0:
        _, reference = build_tokenizer_and_policy(config)
    module = RestModule(config, policy, tokenizer, reference, reward_fn=reward_fn)
    data = ToolUseDataModule(config.data, tokenizer, config.trainer.prompts_per_step)
    trainer = make_trainer(config, run_dir, max_steps=config.trainer.max_steps, callbacks=callbacks)
    if trainer.is_global_zero:
        save_config(config, run_dir / "config.yaml")
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
    export_final(trainer, module, tokenizer, run_dir)
    return run_dir


def sft(config: RunConfig) -> Path:
    """Supervised warm start as configured (``sft`` section); the run directory is
    ``output_dir/sft`` and the model lands in ``output_dir/sft/final``. Returns the run directory."""
    from restlit.data import ToolUseDataModule
    from restlit.sft import SFTModule

    release_large_frees()

    run_dir = Path(config.output_dir) / "sft"
    L.seed_everything(config.trainer.seed, workers=True, verbose=False)
    tokenizer, policy = build_tokenizer_and_policy(config)
    module = SFTModule(config, policy, tokenizer)
    data = ToolUseDataModule(config.data, tokenizer, config.sft.batch_size)
    data.prepare_data()
    data.setup("fit")
    steps = config.sft.max_steps or max(1, config.sft.epochs * len(data.train_items) // config.sft.batch_size)
    trainer = make_trainer(config, run_dir, max_steps=steps, checkpoints=False,
                           gradient_clip_val=config.optim.grad_clip or None)
    if trainer.is_global_zero:
        save_config(config, run_dir / "config.yaml")
    trainer.fit(module, datamodule=data)
    export_final(trainer, module, tokenizer, run_dir)
    return run_dir
