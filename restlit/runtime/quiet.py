"""Hide the third-party messages restlit knows to be harmless, so a run shows restlit's output.

:func:`quiet` (called by the command line, and by ``fit`` and ``sft`` of the Python API) filters exactly
these, and keeps every other warning:

- Lightning's "Tip: ... litlogger" advertisement (an info log line);
- the pytree ``LeafSpec`` deprecation inside Lightning;
- ModelCheckpoint's essay on manual optimisation (restlit checkpoints after the optimizer step on purpose);
- "module(s) in eval mode at the start of training" (restlit sets the policy's train mode itself;
  the frozen reference model stays in eval mode);
- transformers' "``use_cache=True`` is incompatible with gradient checkpointing" notice;
- on ``--resume``: ModelCheckpoint's "Checkpoint directory ... exists and is not empty" (restlit
  refuses a used directory unless resuming or overwriting) and "callbacks used to create the
  checkpoint need to be provided" (a resume may change ``trainer.checkpoint_every``).

(Lightning's CSV "Previous log files ... will be deleted" warning no longer happens: restlit's CSV
logger never deletes, see :mod:`restlit.loggers`.) ``RESTLIT_VERBOSE=1`` shows everything.
"""

from __future__ import annotations

import logging
import os
import warnings

WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",
    r"Using ModelCheckpoint with manual optimization",
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"Checkpoint directory .* exists and is not empty",
    r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided",
)
LOG_LINES = {
    "lightning.pytorch.utilities.rank_zero": "litlogger",
    "lightning.fabric.utilities.rank_zero": "litlogger",
    "transformers.utils.generic": "is incompatible with gradient checkpointing",
    "transformers.modeling_layers": "is incompatible with gradient checkpointing",
}


class _Drop(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet() -> None:
    """Install the filters above (nothing when ``RESTLIT_VERBOSE`` is set to a non-empty value but ``0``)."""
    if os.environ.get("RESTLIT_VERBOSE", "0") not in ("", "0"):
        return
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, text in LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) and f.text == text for f in logger.filters):
            logger.addFilter(_Drop(text))


__all__ = ["quiet"]
