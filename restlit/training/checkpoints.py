"""A run's checkpoints and its claim on the run directory: atomic checkpoint writes, reading a
checkpoint's step, what ``--resume`` checks before anything is touched, and what a fresh run may
replace (``--overwrite``)."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from restlit.config import RunConfig, load_config, save_config, to_dict
from restlit.runtime.outputs import (
    OutputError,
    atomic_write,
    is_rank_zero,
    reason,
    refuse_links,
    write_reason,
)
from restlit.runtime.owned import claim, record, remove_owned

__all__ = ["RESUME_MAY_CHANGE", "RUN_FILES", "SAFE_GLOBALS", "AtomicCheckpointIO", "CheckpointOnSigterm",
           "changed_keys", "check_resume", "checkpoint_step", "claim_run_dir", "has_final", "is_run_file",
           "load_checkpoint_file", "never_trained", "refuse_run_links", "start_run"]


# What a restlit checkpoint holds beyond tensors, numbers, strings and containers: nothing (the
# module's state, the optimizer's and scheduler's state dicts, loop and callback state are all
# plain). A class a future checkpoint needs is added here, never ``weights_only=False``.
SAFE_GLOBALS: tuple[Any, ...] = ()


def load_checkpoint_file(path: str | Path, map_location: Any = "cpu", **kwargs: Any) -> Any:
    """``torch.load(path, weights_only=True)`` allowing only :data:`SAFE_GLOBALS`: a file that
    would run code when unpickled (or holds any other object) is refused with an
    :class:`~restlit.runtime.outputs.OutputError` before anything in it runs; a truncated or
    foreign file too, in one line."""
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError:
        raise OutputError(f"{path} holds Python objects beyond tensors and numbers: it is not a checkpoint "
                          f"restlit wrote, and restlit will not load it (loading could run code)") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:  # torch reports a truncated zip as RuntimeError
        raise OutputError(f"{path} cannot be read ({reason(exc)}): it is truncated or not a checkpoint; "
                          f"copy an earlier checkpoints/step=N.ckpt over it to resume from there") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Streams each checkpoint into a temporary file beside its target and renames it into place:
    a run killed while saving never leaves a truncated checkpoint behind. Lightning's own writer
    serialises the whole checkpoint into memory first (weights + optimizer state, then a copy of
    those bytes), which doubled a small model's peak memory; this one never holds it twice.
    A write that fails (full disk, unwritable directory) removes its temporary file, keeps the
    previous checkpoint and ends the run with an :class:`~restlit.runtime.outputs.OutputError` naming the path.
    The temporary file is created exclusively under a random name
    (:func:`~restlit.runtime.outputs.atomic_write`): a planted link is never written through.
    Checkpoints are read with :func:`load_checkpoint_file` (``weights_only``, whatever the caller asks)."""

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location if map_location is not None else "cpu")

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("storage_options is not supported by restlit's checkpoint writer")
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            refuse_links(path.parent.parent, [path.parent.name])
            record(path.parent.parent, [f"{path.parent.name}/{path.name}"])
            with atomic_write(path) as f:
                torch.save(checkpoint, f)
        except OutputError as exc:
            raise OutputError(f"cannot write checkpoint {exc} (earlier checkpoints are kept)") from None
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
            raise OutputError(f"cannot write checkpoint {path}: {write_reason(exc, path.parent)} "
                              f"(earlier checkpoints are kept)") from None


class CheckpointOnSigterm(L.Callback):
    """Saves ``path`` (the run's ``last.ckpt``) when SIGTERM stops training: Lightning ends the
    step under way, then raises ``SIGTERMException`` (a ``SystemExit`` whose status is 0, so the
    run would look finished); :func:`restlit.training.run.fit` turns it into one line and a
    non-zero exit, and ``--resume`` continues from this checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)


# What a run directory holds once a fit or sft has written it; --overwrite removes the files
# restlit wrote there (its manifest, restlit.runtime.owned), or in a run without one (an older
# restlit) those that is_run_file names; anything else in the way is refused.
RUN_FILES = ("config.yaml", "metrics.csv", "hparams.yaml", "checkpoints", "final", "curriculum", "tensorboard",
             "wandb", "mlruns", "report")
_LEGACY_RUN_FILE = re.compile(
    r"(config\.yaml|metrics\.csv|hparams\.yaml|checkpoints/(last|step=\d+)(-v\d+)?\.ckpt|curriculum/rank\d+\.pt"
    r"|tensorboard/(events\.out\.tfevents\.[^/]+|hparams\.yaml)|final/((generation_|tokenizer_|adapter_)?config"
    r"|tokenizer|special_tokens_map|added_tokens|vocab)\.json|final/(model|adapter_model)(-\d+-of-\d+)?\.safetensors"
    r"|final/model\.safetensors\.index\.json|final/(merges\.txt|chat_template\.jinja|tokenizer\.model)"
    r"|report/(report\.md|(rewards|entropy|weights|throughput|training|sft)\.png))")


def is_run_file(rel: str) -> bool:
    """Whether ``rel`` (a path inside a run directory) is a name restlit's fit or sft writes: the
    rule for a run directory without a manifest (written by an older restlit), with the default
    ``report/``'s files. ``wandb/`` and ``mlruns/`` files are not (their names are not restlit's
    to know): such a run refuses ``--overwrite`` naming them, to be removed by hand."""
    return _LEGACY_RUN_FILE.fullmatch(rel) is not None


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
    disk; read by :func:`load_checkpoint_file`); one line when the file is truncated, not a
    checkpoint, or holds anything that could run code."""
    ckpt = load_checkpoint_file(path, mmap=True)
    try:
        return int(ckpt["global_step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise OutputError(f"{path} cannot be read ({reason(exc)}): it is truncated or not a checkpoint; "
                          f"copy an earlier checkpoints/step=N.ckpt over it to resume from there") from None


def refuse_run_links(run_dir: Path) -> None:
    """One line when a run entry (:data:`RUN_FILES`), or a file in ``checkpoints/`` or
    ``curriculum/``, is a symbolic link: the run would write through it, outside its directory."""
    refuse_links(run_dir, RUN_FILES)
    for sub in ("checkpoints", "curriculum"):
        if (run_dir / sub).is_dir():
            refuse_links(run_dir / sub, [p.name for p in (run_dir / sub).iterdir()])


def has_final(run_dir: Path) -> bool:
    """Whether ``run_dir/final`` holds an export (its ``config.json`` and weights)."""
    final = Path(run_dir) / "final"
    return (final / "config.json").is_file() and any(final.glob("*.safetensors"))


def never_trained(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that stopped before its first step was logged (no
    checkpoint, no ``final/``, no row in ``metrics.csv``): nothing there is worth an
    ``--overwrite`` to replace (only restlit's own files are, still)."""
    run_dir = Path(run_dir)
    if any((run_dir / "checkpoints").glob("*.ckpt")) or (run_dir / "final").exists():
        return False
    try:
        with open(run_dir / "metrics.csv", newline="") as f:
            return sum(1 for _ in f) <= 1  # at most the header
    except FileNotFoundError:
        return True
    except OSError:
        return False


def check_resume(config: RunConfig, run_dir: Path) -> int:
    """What ``fit --resume`` needs before anything is touched: a readable ``last.ckpt``, the same
    config as the saved ``config.yaml`` (but :data:`RESUME_MAY_CHANGE`), and steps left to train
    or a ``final/`` export missing (a finished run whose export was lost: resuming exports it).
    Returns the checkpoint's step."""
    refuse_run_links(run_dir)
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
    if step >= config.trainer.max_steps and has_final(run_dir):
        raise OutputError(f"{run_dir} already finished at step {step} (trainer.max_steps {config.trainer.max_steps}); "
                          f"raise trainer.max_steps to train further")
    return step


def claim_run_dir(config: RunConfig, run_dir: Path, *, resume: bool, overwrite: bool,
                  hint: str = "use --resume, another output_dir, or --overwrite") -> tuple[int, list[Path]]:
    """Checks before a run loads anything: resume (see :func:`check_resume`) or a fresh run
    directory (an earlier run there refuses without ``overwrite``, saying ``hint``, unless it
    never trained: :func:`never_trained`; files restlit did not write always refuse:
    :func:`restlit.runtime.owned.claim`). Returns the step to start
    from and the files ``--overwrite`` will remove once the run is ready (only on rank 0)."""
    if resume:
        return check_resume(config, run_dir), []
    if not is_rank_zero():
        return 0, []
    found = claim(run_dir, RUN_FILES, overwrite=overwrite or never_trained(run_dir), what="a run", hint=hint,
                  legacy=is_run_file)
    refuse_run_links(run_dir)
    return 0, found


def start_run(run_dir: Path, config: RunConfig, start: int, old: list[Path]) -> None:
    """On rank 0, just before training: remove the replaced run's files, keep the metrics rows the
    checkpoint holds, write config.yaml and record what the run writes in its manifest."""
    from restlit.training.loggers import keep_rows_before

    remove_owned(run_dir, old, RUN_FILES)
    if start:
        missing = keep_rows_before(run_dir, start)
        if missing:
            warnings.warn(f"{run_dir / 'metrics.csv'} has no row for step(s) {missing} "
                          f"(the run was stopped before they were written)", stacklevel=2)
    save_config(config, run_dir / "config.yaml")
    log = config.logging
    trees = [name for name, on in (("curriculum", True), ("tensorboard", log.tensorboard), ("wandb", log.wandb.enabled),
                                   ("mlruns", log.mlflow.enabled and not log.mlflow.tracking_uri)) if on]
    record(run_dir, ["config.yaml", "metrics.csv", "hparams.yaml"], trees)
