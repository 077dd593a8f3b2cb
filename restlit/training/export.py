"""Exporting a trained policy: ``RUN/final`` with ``save_pretrained`` (weights and tokenizer; with
LoRA the adapter plus ``final/merged``, a full model: :func:`restlit.adapters.save_adapter`),
written by rank 0 into a temporary directory that replaces ``final/`` only once complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from restlit.adapters import is_adapted, save_adapter
from restlit.runtime.outputs import replace_dir

__all__ = ["export_final"]


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
                if is_adapted(module.policy):  # the adapter, and merged/ a full model
                    save_adapter(module.policy, policy_state, tokenizer, tmp)
                    return
                module.policy.save_pretrained(tmp, state_dict=policy_state)
                tokenizer.save_pretrained(tmp)

            replace_dir(out, write)
    finally:
        trainer.strategy.barrier()
    return out
