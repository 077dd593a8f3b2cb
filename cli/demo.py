"""``restlit demo``: prepare -> base eval -> SFT -> eval -> ResT -> eval -> report, on a CPU."""

from __future__ import annotations

from pathlib import Path

import typer

from restlit.cli.fit import CONFIG, OVERWRITE, SET


def demo(
    config: Path = CONFIG,
    overrides: list[str] | None = SET,
    heldout_limit: int = typer.Option(32, help="Held-out items scored per model."),
    bfcl_limit: int = typer.Option(32, help="BFCL simple_python items scored per model."),
    eval_tokens: int = typer.Option(128, help="Generation length cap when scoring."),
    overwrite: bool = OVERWRITE,
) -> None:
    """The whole method on the embedded model: ends with a base / SFT / ResT table and a report."""
    from restlit.config import load_config
    from restlit.experiments.demo import run_demo

    run_demo(load_config(config, overrides or []), heldout_limit=heldout_limit, bfcl_limit=bfcl_limit,
             eval_tokens=eval_tokens, overwrite=overwrite)
