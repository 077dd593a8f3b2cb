"""``restlit ablate``: arms of one config (named override sets) trained from one start, scored alike."""

from __future__ import annotations

from pathlib import Path

import typer

from restlit.cli.fit import CONFIG, SET


def ablate(
    config: Path = CONFIG,
    overrides: list[str] | None = SET,
    arm: list[str] | None = typer.Option(
        None, "--arm", help="NAME:KEY=VALUE[,KEY=VALUE...] (repeatable); replaces ablation.arms and the defaults "
                            "grpo, static, entropy-no-curriculum, rest, rest-fixed-reward."),
    seeds: int | None = typer.Option(None, "--seeds", help="Seeds per arm (default: ablation.seeds)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory (default: OUTPUT_DIR/ablation)."),
    drop_checkpoints: bool = typer.Option(
        False, "--drop-checkpoints", help="Delete a finished arm's checkpoints/ (its restart state); final/ stays."),
) -> None:
    """Train each arm from the same start on the same prompts and seeds; table, curves, paired differences."""
    from restlit.experiments.ablation import make_plan, run_ablation

    # a user mistake (config, arms, data, model, output) is a UserError: one line (cli/main.py)
    plan = make_plan(config, overrides or [], arms=arm or [], seeds=seeds, out=out)
    path = run_ablation(plan, keep_checkpoints=not drop_checkpoints)
    print((path.parent / "ablation.md").read_text())
    print(f"ablation: {path}")
