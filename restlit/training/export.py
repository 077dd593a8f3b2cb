"""Exporting a trained policy: ``RUN/final`` with ``save_pretrained`` (weights and tokenizer; with
LoRA the adapter plus ``final/merged``, a full model: :func:`restlit.adapters.save_adapter`; and
the run's output format: :func:`restlit.formats.record.save_format`), written by rank 0 into a
temporary directory that replaces ``final/`` only once complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from safetensors import SafetensorError

from restlit.adapters import MERGED, is_adapted, save_adapter
from restlit.errors import UserError
from restlit.formats.record import save_format
from restlit.runtime.outputs import replace_dir, write_reason
from restlit.runtime.owned import record

__all__ = ["export_final"]


def export_final(trainer: L.Trainer, module: Any, tokenizer: Any, run_dir: Path, out: Path | None = None) -> Path:
    """Save the trained policy and its tokenizer to ``RUN/final`` (or ``out``) with ``save_pretrained``.

    The weights come from ``strategy.lightning_module_state_dict()``, which every rank calls (under
    FSDP it gathers the full parameters); rank 0 writes, into a temporary directory that replaces
    ``final/`` only once complete (a failed export names the path and leaves no temporary files).
    Weights that are not finite (a diverged run) are never exported: a :class:`UserError` instead."""
    state = trainer.strategy.lightning_module_state_dict()
    out = out or run_dir / "final"
    try:
        if trainer.is_global_zero:
            prefix = "policy."
            policy_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            bad = [k for k, v in policy_state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
            if bad:
                raise UserError(f"{out} not written: the trained weights are not finite (NaN or inf in "
                                f"{len(bad)} tensors, first {bad[0]}); lower optim.lr / sft.lr or set optim.grad_clip")

            def write(tmp: Path) -> None:
                fmt = module.config.data.tool_format
                try:
                    if is_adapted(module.policy):  # the adapter, and merged/ a full model
                        save_adapter(module.policy, policy_state, tokenizer, tmp)
                        save_format(tmp / MERGED, tokenizer, fmt)  # the served model renders tools as trained
                    else:
                        module.policy.save_pretrained(tmp, state_dict=policy_state)
                        tokenizer.save_pretrained(tmp)
                    save_format(tmp, tokenizer, fmt)  # template + restlit.json
                except SafetensorError as exc:  # a full disk, in safetensors' words
                    raise OSError(_os_error(str(exc)) or write_reason(exc, tmp)) from None

            replace_dir(out, write)
            record(out.parent, [out.name])
    finally:
        trainer.strategy.barrier()
    return out


def _os_error(text: str) -> str | None:
    """The OS's message for safetensors' ``... (os error 28)``: ``No space left on device``."""
    import os
    import re

    m = re.search(r"os error (\d+)", text)
    return os.strerror(int(m.group(1))) if m else None
