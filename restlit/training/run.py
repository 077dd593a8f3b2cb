"""Building and running a ``fit`` (ResT) or ``sft`` run from a :class:`RunConfig`.

The CLI commands are thin wrappers over :func:`fit` and :func:`sft`, so tests and notebooks run
exactly what users run. A run directory holds ``config.yaml`` (the resolved config),
``metrics.csv`` (Lightning's CSV logger), ``checkpoints/`` and, at the end, ``final/`` (the policy
and tokenizer, ``save_pretrained``, loadable with ``model.path: RUN/final``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from restlit.config import RunConfig
from restlit.errors import UserError
from restlit.kernels import memory
from restlit.models import check_vocabulary, load_policy, load_tokenizer
from restlit.runtime.outputs import is_rank_zero, lock, reason, stop_on_sigterm
from restlit.runtime.quiet import quiet
from restlit.training import checkpointing
from restlit.training.checkpoints import AtomicCheckpointIO, CheckpointOnSigterm, claim_run_dir, start_run
from restlit.training.export import export_final
from restlit.training.loggers import build_loggers


def build_tokenizer_and_policy(config: RunConfig, gradient_checkpointing: checkpointing.Mode | None = None
                               ) -> tuple[Any, Any]:
    """The tokenizer and the policy that ``config.model`` describes (with LoRA adapters when
    ``model.lora`` is set); ``gradient_checkpointing`` overrides
    ``model.gradient_checkpointing`` (:mod:`restlit.checkpointing`)."""
    m = config.model
    tokenizer = load_tokenizer(m.tokenizer or m.path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = load_policy(m.path, init=m.init, architecture=m.architecture, dtype=m.dtype, tokenizer=tokenizer,
                         seed=m.seed, lora=m.lora)
    check_vocabulary(policy, tokenizer, m.tokenizer or m.path)
    checkpointing.enable(policy, m.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing)
    return tokenizer, policy


class ReleaseFreedMemory(L.Callback):
    """:func:`restlit.kernels.memory.release` after every backward and every training batch, where a
    phase's temporaries have just been freed (each rank trims its own process)."""

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        memory.release()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        memory.release()


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning's ``precision`` for ``trainer.precision``; ``auto`` picks ``bf16-mixed`` (float32
    weights, optimizer and reductions; matrix products in bfloat16 under autocast) where the hardware
    multiplies bfloat16 fast, ``32-true`` elsewhere: a CPU with AMX tiles (without AMX a CPU's
    bfloat16 products are slower than its float32 ones; see ``benchmarks/RESULTS.md``), or a CUDA GPU
    that supports bfloat16. Other values pass through."""
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    if accelerator in ("cpu", "auto"):
        return "bf16-mixed" if torch.cpu._is_amx_tile_supported() else "32-true"
    return "32-true"


def make_trainer(config: RunConfig, run_dir: Path, *, max_steps: int, checkpoints: bool = True,
                 callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A Lightning Trainer with the config's hardware settings, loggers, progress bar, and (with
    ``checkpoints``) atomic checkpoints every ``trainer.checkpoint_every`` steps plus ``last.ckpt``;
    ``callbacks`` are added (``restlit ablate`` scores the policy during training with one), and
    freed heap memory goes back to the system after each backward and batch
    (:class:`ReleaseFreedMemory`)."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    t = config.trainer
    callbacks = [*callbacks, ReleaseFreedMemory()]
    if checkpoints:
        callbacks.append(CheckpointOnSigterm(run_dir / "checkpoints" / "last.ckpt"))
        callbacks.append(ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="{step}",
                                         every_n_train_steps=max(1, t.checkpoint_every), save_top_k=-1,
                                         save_last=True))
    if config.logging.progress_bar:
        callbacks.append(RichProgressBar())
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=resolve_precision(t.precision, t.accelerator),
        max_steps=max_steps, max_epochs=-1, log_every_n_steps=t.log_every_n_steps,
        logger=build_loggers(config, run_dir) or False, callbacks=callbacks,
        enable_checkpointing=checkpoints, enable_progress_bar=config.logging.progress_bar,
        use_distributed_sampler=False, num_sanity_val_steps=0,
        val_check_interval=t.val_every or None, limit_val_batches=1.0 if t.val_every else 0,
        plugins=[AtomicCheckpointIO()] if checkpoints else None, default_root_dir=run_dir,
        enable_model_summary=False,
    )


def fit(config: RunConfig, *, resume: bool = False, overwrite: bool = False, reward_fn: Any = None,
        callbacks: Sequence[L.Callback] = ()) -> Path:
    """Run ResT training as configured; returns the run directory. ``reward_fn`` replaces
    ToolRL's reward (see :class:`restlit.training.module.RestModule`); ``callbacks`` join the trainer's. An ``output_dir`` that already holds
    a run needs ``resume`` (continue from ``checkpoints/last.ckpt``) or ``overwrite`` (replace it);
    see docs/training.md, "Runs and outputs"."""
    from restlit.training.data import ToolUseDataModule
    from restlit.training.module import RestModule

    quiet()  # as quiet as the command line (RESTLIT_VERBOSE=1 shows everything)
    memory.release_large_frees()

    run_dir = Path(config.output_dir)
    with lock(run_dir) if is_rank_zero() else contextlib.nullcontext():
        start, old = claim_run_dir(config, run_dir, resume=resume, overwrite=overwrite)
        L.seed_everything(config.trainer.seed, workers=True, verbose=False)
        tokenizer, policy = build_tokenizer_and_policy(config)
        reference = None
        if config.objective.loss.kl_coef > 0 and config.model.lora is None:  # LoRA: the adapters disabled
            _, reference = build_tokenizer_and_policy(config)
        module = RestModule(config, policy, tokenizer, reference, reward_fn=reward_fn)
        data = ToolUseDataModule(config.data, tokenizer, config.trainer.prompts_per_step)
        trainer = make_trainer(config, run_dir, max_steps=config.trainer.max_steps, callbacks=callbacks)
        if trainer.is_global_zero and is_rank_zero():
            start_run(run_dir, config, start, old)
        last = run_dir / "checkpoints" / "last.ckpt"
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
        except SIGTERMException:
            raise UserError(f"{run_dir}: stopped by SIGTERM at step {trainer.global_step} of "
                            f"{config.trainer.max_steps}; {last} holds it: continue with --resume") from None
        except RuntimeError as exc:
            if resume and "state_dict" in str(exc):
                raise UserError(f"--resume: {last} does not fit this model ({reason(exc)})") from None
            raise
        with stop_on_sigterm(f"{run_dir}: stopped by SIGTERM while writing final/ (training had finished); "
                             f"fit --resume writes it"):
            export_final(trainer, module, tokenizer, run_dir)
    return run_dir


def sft(config: RunConfig, *, overwrite: bool = False) -> Path:
    """Supervised warm start as configured (``sft`` section); the run directory is
    ``output_dir/sft`` and the model lands in ``output_dir/sft/final``. Returns the run directory.
    An earlier sft run there refuses without ``overwrite``."""
    from restlit.training.data import ToolUseDataModule
    from restlit.training.sft import SFTModule

    if config.sft.max_seq_tokens <= config.data.max_prompt_tokens:
        # a prompt as long as the cut leaves no target token: no loss, no backward, and under DDP
        # that rank would skip the gradient all-reduce the others wait in
        raise UserError(f"sft.max_seq_tokens ({config.sft.max_seq_tokens}) must exceed data.max_prompt_tokens "
                        f"({config.data.max_prompt_tokens}): every sample needs a target token")
    quiet()
    memory.release_large_frees()

    run_dir = Path(config.output_dir) / "sft"
    with lock(run_dir) if is_rank_zero() else contextlib.nullcontext():
        _, old = claim_run_dir(config, run_dir, resume=False, overwrite=overwrite,
                               hint="use another output_dir or --overwrite")
        L.seed_everything(config.trainer.seed, workers=True, verbose=False)
        tokenizer, policy = build_tokenizer_and_policy(config, config.sft.gradient_checkpointing)
        module = SFTModule(config, policy, tokenizer)
        data = ToolUseDataModule(config.data, tokenizer, config.sft.batch_size)
        data.prepare_data()
        data.setup("fit")
        steps = config.sft.max_steps or max(1, config.sft.epochs * len(data.train_items) // config.sft.batch_size)
        trainer = make_trainer(config, run_dir, max_steps=steps, checkpoints=False)
        if trainer.is_global_zero and is_rank_zero():
            start_run(run_dir, config, 0, old)
        try:
            trainer.fit(module, datamodule=data)
        except SIGTERMException:
            raise UserError(f"{run_dir}: sft stopped by SIGTERM at step {trainer.global_step} of {steps}, before "
                            f"its final/ was written; run it again with --overwrite") from None
        with stop_on_sigterm(f"{run_dir}: sft stopped by SIGTERM while writing final/; run it again with --overwrite"):
            export_final(trainer, module, tokenizer, run_dir)
    return run_dir
