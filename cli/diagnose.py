"""``restlit diagnose``: measurements that help decide before paying for a run."""

from __future__ import annotations

from pathlib import Path

import typer

from restlit.cli.errors import fail, one_line
from restlit.cli.fit import CONFIG, SET

app = typer.Typer(help="Diagnostics: `restlit diagnose variance` measures the policy-gradient variance per weighting.",
                  no_args_is_help=True)


@app.command("variance")
@one_line
def variance(
    config: Path = CONFIG,
    overrides: list[str] | None = SET,
    checkpoint: str | None = typer.Option(None, "--checkpoint", help="Model directory to measure at (default: model.path)."),
    batches: int = typer.Option(8, "--batches", "-k", min=2, help="Independent rollout batches K."),
    sketch_dim: int = typer.Option(65536, "--sketch-dim", min=0,
                                   help="Count-sketch size of each gradient (0: exact, 8 bytes per parameter, batch and prompt)."),
    params: list[str] | None = typer.Option(None, "--params", help="Only parameters whose name contains this (repeatable)."),
    step: int = typer.Option(1, "--step", min=1, help="Training step the weights and reward schedule see."),
    progress: float = typer.Option(0.0, "--progress", min=0.0, max=1.0, help="Curriculum progress nu of the priors."),
    weightings: list[str] | None = typer.Option(
        None, "--weightings", help="Measure only these (repeatable; uniform is always the reference; default: "
                                   "uniform, static, entropy, top-entropy). Each costs a backward pass per batch."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Output directory (default: OUTPUT_DIR/variance)."),
    resume: bool = typer.Option(False, "--resume", help="Keep the batches measured there (OUT/batches) and measure "
                                                        "only the rest, up to --batches; the report is replaced."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over: replace an earlier report and its batches there."),
    shard: str | None = typer.Option(
        None, "--shard", help="I/N: measure only the batches k with k % N == I into OUT/batches, adding to what is "
                              "there, and write no report. Run N of them in parallel (processes or machines sharing "
                              "OUT), then once with --resume and no --shard to report."),
) -> None:
    """Gradient variance of uniform / static / entropy / top-entropy weights on the same samples, with the paper's bound."""
    extra = [f"model.path={checkpoint}", "model.init=pretrained"] if checkpoint else []
    from restlit.config import load_config
    from restlit.experiments.variance import (
        WEIGHTINGS,
        markdown,
        measure_variance,
        stored_batches,
        write_report,
    )

    if resume and overwrite:
        fail("--resume keeps the measured batches, --overwrite deletes them: give one")
    part = _shard(shard) if shard is not None else None
    if part and overwrite:
        fail("--shard adds batches beside other shards' and --overwrite deletes them: give one")
    cfg = load_config(config, [*(overrides or []), *extra])

    out = out or Path(cfg.output_dir) / "variance"
    store = out / "batches"
    kept = stored_batches(store)
    if not (resume or overwrite or part) and ((out / "variance.json").exists() or kept):
        fail(f"{out} holds " + (f"{kept} measured batch{'es' if kept > 1 else ''}" if kept else "a report") + "; pass --resume to add to "
             "them, --overwrite to start over, or choose another -o")
    report = measure_variance(cfg, batches=batches, sketch_dim=sketch_dim, params=params or [], step=step,
                              progress=progress, weightings=["uniform", *(weightings or WEIGHTINGS)], store=store,
                              restart=overwrite, shard=part)
    if report is None:
        print(f"shard {shard}: {out / 'batches'} holds {stored_batches(store, below=batches)} of {batches} batches; "
              f"once every shard is done, report with --resume and no --shard")
        return
    path = write_report(report, out, overwrite=True)
    print(markdown(report))
    print(f"variance: {path}")


def _shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; one line naming the problem otherwise."""
    i, _, n = text.partition("/")
    if not (i.isdigit() and n.isdigit()) or not int(i) < int(n):
        fail(f"--shard {text}: give I/N with 0 <= I < N, e.g. 0/2 and 1/2 for two processes")
    return int(i), int(n)
