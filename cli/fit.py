"""``restlit fit`` and ``restlit sft``: training from a YAML config.

Errors a user can fix (a config value, the data, the model, an output directory that already
holds a run) are :class:`restlit.errors.UserError` and end in one line (``cli/main.py``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from restlit.cli.errors import fail

CONFIG = typer.Option(..., "--config", "-c", help="YAML run config (see configs/).")
SET = typer.Option(None, "--set", help="Override a config key: --set optim.lr=2e-6 (repeatable).")
OVERWRITE = typer.Option(False, "--overwrite",
                         help="Replace the run already in output_dir (its checkpoints, logs and final model).")


def fit(
    config: Path = CONFIG,
    overrides: list[str] | None = SET,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output_dir from its last checkpoint."),
    overwrite: bool = OVERWRITE,
) -> None:
    """ResT reinforcement learning: rollouts, rewards, region-weighted policy gradient."""
    from restlit.config import load_config
    from restlit.training.run import fit as run_fit

    if resume and overwrite:
        fail("give --resume (continue the run) or --overwrite (replace it), not both")
    run_dir = run_fit(load_config(config, overrides or []), resume=resume, overwrite=overwrite)
    print(f"run finished: {run_dir} (final model: {run_dir / 'final'})")


def sft(config: Path = CONFIG, overrides: list[str] | None = SET, overwrite: bool = OVERWRITE) -> None:
    """Supervised warm start on the prepared targets (loss on target tokens only)."""
    from restlit.config import load_config
    from restlit.training.run import sft as run_sft

    run_dir = run_sft(load_config(config, overrides or []), overwrite=overwrite)
    print(f"sft finished: {run_dir} (model: {run_dir / 'final'}; train from it with --set model.path={run_dir / 'final'})")
