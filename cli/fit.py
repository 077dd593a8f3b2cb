"""``restlit fit`` and ``restlit sft``: training from a YAML config."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.errors import fail

CONFIG = typer.Option(..., "--config", "-c", help="YAML run config (see configs/).")
SET = typer.Option(None, "--set", help="Override a config key: --set optim.lr=2e-6 (repeatable).")


def _load(config: Path, overrides: list[str] | None):
    from restlit.config import ConfigError, load_config

    try:
        return load_config(config, overrides or [])
    except ConfigError as exc:
        fail(str(exc))


def _user_errors() -> tuple[type[Exception], ...]:
    from data_prep.inputs import InputError
    from restlit.data import DataError
    from restlit.models import ModelNotFound

    return (DataError, ModelNotFound, InputError, FileNotFoundError)


def fit(
    config: Path = CONFIG,
    overrides: list[str] | None = SET,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output_dir from its last checkpoint."),
) -> None:
    """ResT reinforcement learning: rollouts, rewards, region-weighted policy gradient."""
    cfg = _load(config, overrides)
    from restlit.train import fit as run_fit

    try:
        run_dir = run_fit(cfg, resume=resume)
    except _user_errors() as exc:
        fail(str(exc))
    print(f"run finished: {run_dir} (final model: {run_dir / 'final'})")


def sft(config: Path = CONFIG, overrides: list[str] | None = SET) -> None:
    """Supervised warm start on the prepared targets (loss on target tokens only)."""
    cfg = _load(config, overrides)
    from restlit.train import sft as run_sft

    try:
        run_dir = run_sft(cfg)
    except _user_errors() as exc:
        fail(str(exc))
    print(f"sft finished: {run_dir} (model: {run_dir / 'final'}; train from it with --set model.path={run_dir / 'final'})")
