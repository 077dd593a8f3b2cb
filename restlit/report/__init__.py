"""``restlit report``: figures and a Markdown summary from a run directory's logs.

Everything here reads files that ``restlit fit`` (and ``restlit sft`` / ``restlit eval``) wrote:
:mod:`restlit.report.logs` reads them, :mod:`restlit.report.figures` draws the PNG figures,
:mod:`restlit.report.markdown` writes ``report.md``; :func:`build_report` does all three for a
run directory. The curriculum panel draws the priors training logged
(``curriculum/prior/<REGION>``); nothing here recomputes what training computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from restlit.report.figures import FIGURES, REGION_COLORS, make_figures
from restlit.report.logs import (
    DEFAULT_LAST_N,
    REGIONS,
    ReportError,
    find_evals,
    find_manifest,
    load_run_config,
    read_metrics,
)
from restlit.report.markdown import write_markdown
from restlit.runtime.outputs import OutputError, refuse_links
from restlit.runtime.owned import owned_files, record

__all__ = ["REGIONS", "REGION_COLORS", "Report", "ReportError", "build_report", "read_metrics"]


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)


def build_report(
    run_dir: str | Path, out_dir: str | Path | None = None, *, last_n: int = DEFAULT_LAST_N, overwrite: bool = False
) -> Report:
    """Figures and ``report.md`` for ``run_dir`` in ``out_dir`` (default ``run_dir/report``).
    ReportError when ``run_dir`` is not a directory or holds no readable ``metrics.csv``, or when
    ``out_dir`` holds a ``report.md`` or figure that restlit did not write (its manifest,
    :mod:`restlit.runtime.owned`) and not ``overwrite``; an earlier report's own files are replaced."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory (give the run's output_dir)")
    metrics = run_dir / "metrics.csv"
    if not metrics.is_file():
        hint = ""
        if (run_dir / "sft" / "metrics.csv").is_file():
            hint = f"; the SFT run's logs are in {run_dir / 'sft'}"
        raise ReportError(
            f"{metrics}: no such file (not a `restlit fit`/`sft` run directory, or no step logged yet){hint}"
        )
    if last_n < 1:
        raise ReportError(f"--last must be >= 1, got {last_n}")
    log = read_metrics(metrics)
    sft_log = None
    if (run_dir / "sft" / "metrics.csv").is_file():
        try:
            sft_log = read_metrics(run_dir / "sft" / "metrics.csv")
        except ReportError:
            sft_log = None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError("restlit report needs matplotlib: pip install matplotlib") from None
    cfg, raw, text = load_run_config(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the output directory ({exc.strerror or exc})") from None
    names = ["report.md", *(f"{f}.png" for f in (*FIGURES, "sft"))]
    try:
        refuse_links(out, names)
    except OutputError as exc:
        raise ReportError(str(exc)) from None
    _, foreign = owned_files(out, names)
    if foreign and not overwrite:
        raise ReportError(f"{out} holds {', '.join(p.name for p in foreign)}, not written by restlit report; "
                          f"use another --out or --overwrite")
    name = run_dir.resolve().name
    try:
        figures = make_figures(log, out, name=name, cfg=cfg, raw=raw, sft_log=sft_log)
        md = write_markdown(
            out / "report.md",
            run_dir=run_dir,
            log=log,
            figures=figures,
            cfg=cfg,
            raw=raw,
            config_text=text,
            manifest=find_manifest(cfg, raw),
            evals=find_evals(run_dir),
            last_n=last_n,
            sft_log=sft_log,
        )
        record(out, [md.name, *(p.name for p in figures.values())])
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    return Report(md, figures)
