"""Building and running a ``fit`` (ResT) or ``sft`` run from a :class:`RunConfig`.

The CLI commands are thin wrappers over :func:`fit` and :func:`sft`, so tests and notebooks run
exactly what users run. A run directory holds ``config.yaml`` (the resolved config),
``metrics.csv`` (Lightning's CSV logger), ``checkpoints/`` and, at the end, ``final/`` (the policy
and tokenizer, ``save_pretrained``, loadable with ``model.path: RUN/final``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from restlit import checkpointing, memory
from restlit.config import RunConfig, load_config, save_config, to_dict
from restlit.errors import UserError
from restlit.loggers import build_loggers
from restlit.models import load_policy, load_tokenizer
from restlit.outputs import OutputError, existing, is_rank_zero, lock, reason, remove, replace_dir


class AtomicCheckpointIO(TorchCheckpointIO):
    """Streams each checkpoint into a temporary file beside its target and renames it into place:
    a run killed while saving never leaves a truncated checkpoint behind. Lightning's own writer
    serialises the whole checkpoint into memory first (weights + optimizer state, then a copy of
    those bytes), which doubled a small model's peak memory; this one never holds it twice.
    A write that fails (full disk, unwritable directory) removes its temporary file, keeps the
    previous checkpoint and ends the run with an :class:`~restlit.outputs.OutputError` naming the path."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options is not supported by restlit's checkpoint writer")
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
            raise OutputError(f"cannot write checkpoint {path}: {reason(exc)} (earlier checkpoints are kept)") from None
        finally:
            tmp.unlink(missing_ok=True)


def build_tokenizer_and_policy(config: RunConfig, gradient_checkpointing: checkpointing.Mode | None = None
                               ) -> tuple[Any, Any]:
    """The tokenizer and the policy that ``config.model`` describes; ``gradient_checkpointing`` overrides
    ``model.gradient_checkpointing`` (:mod:`restlit.checkpointing`)."""
    m = config.model
    tokenizer = load_tokenizer(m.tokenizer or m.path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    policy = load_policy(m.path, init=m.init, architecture=m.architecture, dtype=m.dtype, tokenizer=tokenizer,
                         seed=m.seed)
    checkpointing.enable(policy, m.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing)
    return tokenizer, policy


class ReleaseFreedMemory(L.Callback):
    """:func:`restlit.memory.release` after every backward and every training batch, where a
    phase's temporaries have just been freed (each rank trims its own process)."""

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        memory.release()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        memory.release()


def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning's ``precision`` for ``trainer.precision``; ``auto`` picks ``bf16-mixed`` (float32
    weights, optimizer and reductions; matrix products in bfloat16 under autocast) where the hardware
    multiplies bfloat16 fast, ``32-true`` elsewhere: a CPU with AMX tiles (on an Intel Xeon, 2026-12-02,
    an ad-hoc loop not in ``benchmarks/`` gave a ``1024 x 576 x 1536`` product 2.4 TFLOP/s in
    bfloat16 vs 0.36 in float32; on CPUs without AMX bfloat16 is several times slower than float32),
    a CUDA GPU that supports bfloat16. Other values pass through."""
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


def export_final(trainer: L.Trainer, module: Any, tokenizer: Any, run_dir: Path, out: Path | None = None) -> Path:
    """Save the trained policy and its tokenizer to ``RUN/final`` (or ``out``) with ``save_pretrained``.

    The weights come from ``strategy.lightning_module_state_dict()``, which every rank calls (under
    FSDP it gathers the full parameters); rank 0 writes, into a temporary directory that replaces
    ``final/`` only once complete (a failed export names the path and leaves no temporary files)."""
    state = trainer.strategy.lightning_module_state_dict()
    out = out or run_dir / "final"
    try:
        if trainer.is_global_zero:
            prefix = "policy."
            policy_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

            def write(tmp: Path) -> None:
                module.policy.save_pretrained(tmp, state_dict=policy_state)
                tokenizer.save_pretrained(tmp)

            replace_dir(out, write)
    finally:
        trainer.strategy.barrier()
    return out


# What a run directory holds once a fit or sft has written it; --overwrite removes exactly these.
RUN_FILES = ("config.yaml", "metrics.csv", "hparams.yaml", "checkpoints", "final", "curriculum", "tensorboard",
             "wandb", "mlruns", "report")
# Keys a --resume may change: how long to train and how to log; anything else would make the
# resumed run a different experiment than its checkpoint's.
RESUME_MAY_CHANGE = ("trainer.max_steps", "trainer.log_every_n_steps", "trainer.checkpoint_every", "logging.",
                     "output_dir", "data.cache_dir")


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def changed_keys(saved: RunConfig, config: RunConfig) -> list[str]:
    """The dotted keys in which ``config`` differs from ``saved``, except :data:`RESUME_MAY_CHANGE`."""
    a, b = _flat(to_dict(saved)), _flat(to_dict(config))
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return [k for k in keys if not any(k == s or (s.endswith(".") and k.startswith(s)) for s in RESUME_MAY_CHANGE)]


def checkpoint_step(path: Path) -> int:
    """The global step a Lightning checkpoint was saved at (memory-mapped: the weights stay on
    disk); one line when the file is truncated or not a checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        return int(ckpt["global_step"])
    except (RuntimeError, OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as exc:  # torch reports a truncated zip as RuntimeError, a foreign file as pickle errors
        raise OutputError(f"{path} cannot be read ({reason(exc)}): it is truncated or not a checkpoint; "
                          f"copy an earlier checkpoints/step=N.ckpt over it to resume from there") from None


def check_resume(config: RunConfig, run_dir: Path) -> int:
    """What ``fit --resume`` needs before anything is touched: a readable ``last.ckpt``, the same
    config as the saved ``config.yaml`` (but :data:`RESUME_MAY_CHANGE`), and steps left to train.
    Returns the checkpoint's step."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise OutputError(f"--resume: no checkpoint at {last}")
    saved = run_dir / "config.yaml"
    if saved.is_file():
        changed = changed_keys(load_config(saved), config)
        if changed:
            raise OutputError(f"--resume: the config differs from {saved} in {', '.join(changed)}; "
                              f"resume with the saved values, or start a new run in another output_dir")
    step = checkpoint_step(last)
    if step >= config.trainer.max_steps:
        raise OutputError(f"{run_dir} already finished at step {step} (trainer.max_steps {config.trainer.max_steps}); "
                          f"raise trainer.max_steps to train further")
    return step


def _claim(config: RunConfig, run_dir: Path, *, resume: bool, overwrite: bool) -> tuple[int, list[Path]]:
    """Checks before a run loads anything: resume (see :func:`check_resume`) or a fresh run
    directory (an earlier run there refuses without ``overwrite``). Returns the step to start from
    and what ``--overwrite`` will remove once the run is ready (only on rank 0)."""
    if resume:
        return check_resume(config, run_dir), []
    return 0, existing(run_dir, RUN_FILES, overwrite=overwrite) if is_rank_zero() else []


def _start(run_dir: Path, config: RunConfig, start: int, old: list[Path]) -> None:
    """On rank 0, just before training: remove the replaced run, keep the metrics rows the
    checkpoint holds, write config.yaml."""
    from restlit.loggers import keep_rows_before

    remove(old)
    if start:
        missing = keep_rows_before(run_dir, start)
        if missing:
            warnings.warn(f"{run_dir / 'metrics.csv'} has no row for step(s) {missing} "
                          f"(the run was stopped before they were written)", stacklevel=2)
    save_config(config, run_dir / "config.yaml")


def fit(config: RunConfig, *, resume: bool = False, overwrite: bool = False, reward_fn: Any = None,
        callbacks: Sequence[L.Callback] = ()) -> Path:
    """Run ResT training as configured; returns the run directory. ``reward_fn`` replaces
    ToolRL's reward (see :class:`restlit.module.RestModule`); ``callbacks`` join the trainer's. An ``output_dir`` that already holds
    a run needs ``resume`` (continue from ``checkpoints/last.ckpt``) or ``overwrite`` (replace it);
    see the README's "Runs and outputs"."""
    from restlit.data import ToolUseDataModule
    from restlit.module import RestModule

    memory.release_large_frees()

    run_dir = Path(config.output_dir)
    with lock(run_dir) if is_rank_zero() else contextlib.nullcontext():
        start, old = _claim(config, run_dir, resume=resume, overwrite=overwrite)
        L.seed_everything(config.trainer.seed, workers=True, verbose=False)
        tokenizer, policy = build_tokenizer_and_policy(config)
        reference = None
        if config.objective.loss.kl_coef > 0:
            _, reference = build_tokenizer_and_policy(config)
        module = RestModule(config, policy, tokenizer, reference, reward_fn=reward_fn)
        data = ToolUseDataModule(config.data, tokenizer, config.trainer.prompts_per_step)
        trainer = make_trainer(config, run_dir, max_steps=config.trainer.max_steps, callbacks=callbacks)
        if trainer.is_global_zero and is_rank_zero():
            _start(run_dir, config, start, old)
        last = run_dir / "checkpoints" / "last.ckpt"
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume else None)
        except RuntimeError as exc:
            if resume and "state_dict" in str(exc):
                raise UserError(f"--resume: {last} does not fit this model ({reason(exc)})") from None
            raise
        export_final(trainer, module, tokenizer, run_dir)
    return run_dir


def sft(config: RunConfig, *, overwrite: bool = False) -> Path:
    """Supervised warm start as configured (``sft`` section); the run directory is
    ``output_dir/sft`` and the model lands in ``output_dir/sft/final``. Returns the run directory.
    An earlier sft run there refuses without ``overwrite``."""
    from restlit.data import ToolUseDataModule
    from restlit.sft import SFTModule

    if config.sft.max_seq_tokens <= config.data.max_prompt_tokens:
        # a prompt as long as the cut leaves no target token: no loss, no backward, and under DDP
        # that rank would skip the gradient all-reduce the others wait in
        raise UserError(f"sft.max_seq_tokens ({config.sft.max_seq_tokens}) must exceed data.max_prompt_tokens "
                        f"({config.data.max_prompt_tokens}): every sample needs a target token")
    memory.release_large_frees()

    run_dir = Path(config.output_dir) / "sft"
    with lock(run_dir) if is_rank_zero() else contextlib.nullcontext():
        _, old = _claim(config, run_dir, resume=False, overwrite=overwrite)
        L.seed_everything(config.trainer.seed, workers=True, verbose=False)
        tokenizer, policy = build_tokenizer_and_policy(config, config.sft.gradient_checkpointing)
        module = SFTModule(config, policy, tokenizer)
        data = ToolUseDataModule(config.data, tokenizer, config.sft.batch_size)
        data.prepare_data()
        data.setup("fit")
        steps = config.sft.max_steps or max(1, config.sft.epochs * len(data.train_items) // config.sft.batch_size)
        trainer = make_trainer(config, run_dir, max_steps=steps, checkpoints=False)
        if trainer.is_global_zero and is_rank_zero():
            _start(run_dir, config, 0, old)
        trainer.fit(module, datamodule=data)
        export_final(trainer, module, tokenizer, run_dir)
    return run_dir
