"""``restlit prepare``: raw ToolACE / ShareGPT / chat / xLAM / ToolRL / Hammer files -> training samples.

A thin wrapper: options -> :func:`restlit.data_prep.pipeline.prepare`, a rich progress bar while the
files are read, and a summary table at the end. User mistakes end in one line and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from restlit.cli.errors import fail


def prepare(
    files: Annotated[list[Path], typer.Argument(
        help="Input files: JSON list or JSON lines (optionally gzip-compressed), or parquet.")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output directory (DatasetDict + manifest.json + rejects.jsonl).")],
    format: Annotated[str, typer.Option(
        help="Layout: auto, toolace, sharegpt, chat, xlam, hammer or toolrl.")] = "auto",
    on_invalid: Annotated[str, typer.Option(
        help="Reference calls that break their tool's schema: reject the turn, keep it, or coerce safe fixes.",
    )] = "reject",
    val_fraction: Annotated[float, typer.Option(help="Fraction of records in the validation split.")] = 0.05,
    parquet: Annotated[bool, typer.Option(help="Also write parquet/{train,validation}.parquet.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the train/validation split hash.")] = 0,
    mask_names: Annotated[float, typer.Option(
        metavar="FRACTION", help="Fraction of samples whose tool and parameter names become random identifiers.",
    )] = 0.0,
    mask_seed: Annotated[int, typer.Option(help="Seed of --mask-names (which samples, which names).")] = 0,
    export_chat: Annotated[Path | None, typer.Option(
        metavar="FILE.jsonl", help="Also write the samples in the OpenAI / Hugging Face chat layout.",
    )] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Replace an earlier prepared dataset at -o (and an existing --export-chat file).")] = False,
) -> None:
    """Turn raw tool-use traces into single-turn samples (one per assistant turn)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from restlit.data_prep.inputs import InputError
    from restlit.data_prep.pipeline import prepare as run_prepare

    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=console, transient=False, disable=not console.is_terminal,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(Path(name).name, total=total)
            bar.update(tasks[name], completed=done)

        try:
            manifest = run_prepare(
                [str(f) for f in files], out, format=format, on_invalid=on_invalid,
                val_fraction=val_fraction, seed=seed, parquet=parquet, mask_names=mask_names,
                mask_seed=mask_seed, export_chat=export_chat, overwrite=overwrite, progress=progress,
            )
        except InputError as exc:
            bar.stop()
            fail(str(exc))
    for line in manifest.warnings:
        console.print(f"warning: {line}", markup=False, highlight=False, soft_wrap=True)
    _summary(manifest, out, export_chat)


def _summary(manifest, out: Path, export_chat: Path | None) -> None:
    """Counts per source, then every reject reason and warning kind with its count."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    counts = Table(title=f"restlit prepare -> {out}")
    counts.add_column("source")
    for col in ("records", "rejected", "turns", "samples", "turns rej.", "coerced", "masked"):
        counts.add_column(col, justify="right")
    details = Table(title="rejects and warnings")
    details.add_column("source")
    details.add_column("kind")
    details.add_column("reason")
    details.add_column("count", justify="right")
    for name, c in [*manifest.sources.items(), ("total", manifest.totals)]:
        counts.add_row(name, str(c.records_read), str(c.records_rejected), str(c.turns), str(c.samples_written),
                       str(c.turns_rejected), str(c.coerced), str(c.masked),
                       style="bold" if name == "total" else None)
        if name == "total":
            continue
        for reason, n in sorted(c.rejected.items()):
            details.add_row(name, "rejected", reason, str(n))
        for kind, n in sorted(c.warnings.items()):
            details.add_row(name, "warning", kind, str(n))
        for role, n in sorted(c.unknown_roles.items()):
            details.add_row(name, "unknown role", role, str(n))
    console.print(counts)
    if details.row_count:
        console.print(details)
    duplicates = [i for i in manifest.inputs if i.duplicate_of is not None]
    for info in duplicates:
        console.print(f"{info.path}: same content as {info.duplicate_of}, read once")
    console.print("splits: " + ", ".join(f"{k} {v}" for k, v in manifest.splits.items())
                  + f"; rejects in {out / 'rejects.jsonl'}; counts in {out / 'manifest.json'}"
                  + (f"; chat export in {export_chat}" if export_chat else ""))
