"""``restlit report``: figures and a Markdown summary of a run directory's logs."""

from __future__ import annotations

from pathlib import Path

import typer

RUN_DIR = typer.Argument(..., help="A run directory (output_dir of `restlit fit`, or its sft/).")
OUT = typer.Option(None, "--out", "-o", help="Output directory (default: RUN_DIR/report).")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace a report.md or figure in OUT that restlit did not write.")
LAST = typer.Option(10, "--last", min=1, help="Average the final metrics over the last N logged steps.")


def report(run_dir: Path = RUN_DIR, out: Path | None = OUT, last: int = LAST, overwrite: bool = OVERWRITE) -> None:
    """PNG figures (rewards, entropy, weights and curriculum, throughput, optimisation) and report.md."""
    from restlit.report import build_report

    result = build_report(run_dir, out, last_n=last, overwrite=overwrite)  # a ReportError is one line (cli/main.py)
    for path in result.figures.values():
        print(f"figure: {path}")
    print(f"report: {result.markdown}")
