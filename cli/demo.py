"""``restlit demo``: prepare -> base eval -> SFT -> eval -> ResT -> eval -> report, on a CPU."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.errors import fail
from cli.fit import CONFIG, SET, _load, _user_errors


def demo(
    config: Path = CONFIG,
    overrides: list[str] | None = SET,
    heldout_limit: int = typer.Option(32, help="Held-out items scored per model."),
    bfcl_limit: int = typer.Option(32, help="BFCL simple_python items scored per model."),
    eval_tokens: int = typer.Option(128, help="Generation length cap when scoring."),
) -> None:
    """The whole method on the embedded model: ends with a base / SFT / ResT table and a report."""
    cfg = _load(config, overrides)
    from restlit.demo import run_demo
    from restlit.evaluation.run import EvalError

    try:
        run_demo(cfg, heldout_limit=heldout_limit, bfcl_limit=bfcl_limit, eval_tokens=eval_tokens)
    except (*_user_errors(), EvalError) as exc:
        fail(str(exc))
