"""``restlit eval``: score a model (or saved outputs) on BFCL (single-turn AST and executed
multi-turn), API-Bank and the held-out split.

A thin wrapper over :mod:`restlit.evaluation.run`: options -> suites -> outputs (``--predictions``
or greedy generation with a progress bar) -> a summary table (accuracy with item count and 95%
Wilson interval, then BFCL's groups) and ``OUT/eval.json`` with every item's verdict and reason.
User mistakes end in one line and exit 2; an ``OUT`` that already holds an ``eval.json`` is refused
unless ``--overwrite``; ``OUT`` is locked while the command runs, as ``fit`` locks its run directory
(:func:`restlit.runtime.outputs.lock`).
"""

from __future__ import annotations

from pathlib import Path

import typer

from restlit.cli.errors import fail

DEFAULT_MODEL = "smollm2-135m"


def eval_command(
    suite: list[str] = typer.Option(
        ..., "--suite", "-s",
        help="heldout, bfcl:<category>[,<category>...], bfcl:multi_turn, bfcl:all, apibank or "
             "apibank:level-1[,level-2,level-3]; repeatable. Categories: simple_python, multiple, parallel, "
             "parallel_multiple, irrelevance, live_simple, live_multiple, live_parallel, live_parallel_multiple, "
             "live_irrelevance, multi_turn_base, multi_turn_miss_func, multi_turn_miss_param, "
             "multi_turn_long_context.",
    ),
    data: Path | None = typer.Option(None, "--data", help="Prepared dataset (restlit prepare -o DIR) for heldout."),
    predictions: Path | None = typer.Option(
        None, "--predictions",
        help='Score saved outputs instead of generating: JSON lines {"id", "output"}, or {"id", "turns": '
             '[[step outputs of turn 1], ...]} for multi-turn entries.'),
    model: str | None = typer.Option(
        None, "--model", help=f"Model directory or alias to generate with (default: {DEFAULT_MODEL})."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Score only the first N items of each suite."),
    out: Path = typer.Option(Path("eval"), "--out", "-o", help="Output directory for eval.json."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Prompts generated together (multi-turn: entries decoded together)."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Generation length cap per output."),
    prompt: str = typer.Option(
        "native", "--prompt", help="API-Bank system prompt: native (the benchmark's own) or restlit (restlit's renderer)."),
    max_context: int | None = typer.Option(
        None, "--max-context", min=1,
        help="Multi-turn: context positions (default: the model's); an entry outgrowing it fails (context_overflow)."),
    engine: str = typer.Option(
        "hf", "--engine",
        help="Generate with hf (transformers; multi-turn keeps each entry's KV cache) or vllm (vLLM, its prefix cache)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an eval.json already in OUT."),
    tool_format: str | None = typer.Option(
        None, "--format",
        help="Output format to prompt and parse in: toolrl, hermes, llama3_json or pythonic "
             "(default: the one recorded with --model's export, else toolrl)."),
) -> None:
    """Score tool calls: BFCL (AST and executed multi-turn), API-Bank, or a prepared validation split."""
    from restlit.evaluation import run
    from restlit.runtime.outputs import lock

    if predictions is not None and model is not None:
        fail("give --predictions (saved outputs) or --model (generate), not both")
    with lock(out):  # one evaluation at a time writes OUT (a second fails naming the first)
        _evaluate(run, suite, data, predictions, model, limit, out, batch_size, max_new_tokens, prompt, max_context,
                  engine, overwrite, tool_format)


def _evaluate(run, suite: list[str], data: Path | None, predictions: Path | None, model: str | None,
              limit: int | None, out: Path, batch_size: int, max_new_tokens: int, prompt: str,
              max_context: int | None, engine: str, overwrite: bool, tool_format: str | None) -> None:
    """The command's body, with ``OUT`` locked."""
    if (out / "eval.json").exists() and not overwrite:
        fail(f"{out} already holds an evaluation (eval.json); use another --out or --overwrite")
    from restlit.formats import UnknownFormat, get_format
    from restlit.formats.record import recorded_format

    try:
        fmt = get_format(tool_format or (recorded_format(model) if model else None))
    except UnknownFormat as exc:
        fail(str(exc))
    try:
        names = run.parse_suites(suite)
        suites = [run.load_suite(name, data=data, limit=limit, prompt=prompt, fmt=fmt) for name in names]
        if predictions is not None:
            outputs = run.load_predictions(predictions)
        else:
            run.check_engine(engine)
            outputs = _generate(run, suites, model or DEFAULT_MODEL, batch_size, max_new_tokens, max_context, engine)
    except run.EvalError as exc:
        fail(str(exc))
    result = run.score(suites, outputs)
    config = {"suites": names, "data": str(data) if data else None, "limit": limit,
              "predictions": str(predictions) if predictions else None,
              "model": None if predictions is not None else (model or DEFAULT_MODEL),
              "max_new_tokens": None if predictions is not None else max_new_tokens,
              "prompt": prompt if any(n.startswith("apibank:") for n in names) else None,
              "max_context": max_context, "engine": None if predictions is not None else engine,
              "format": fmt.name}
    path = run.write_report(result, out, config)
    known = {i for s in suites for i in s.ids}
    _print_summary(result, path, unused=sum(1 for k in outputs if k not in known))


def _generate(run, suites, model: str, batch_size: int, max_new_tokens: int,
              max_context: int | None, engine: str) -> dict:
    """Greedy outputs for every item of ``suites``, keyed by id, with a progress bar: one text per
    single-turn item, the steps of every turn for a multi-turn entry."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    single = [s for s in suites if not s.multi_turn]
    multi = [s for s in suites if s.multi_turn]
    ids = [i for s in single for i in s.ids]
    conversations = [s.messages(i) for s in single for i in range(len(s.ids))]
    loaded = run.load_model(model)
    outputs: dict = {}
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=not console.is_terminal) as bar:
        if ids:
            task = bar.add_task("generating", total=len(ids))
            texts = run.generate_outputs(
                conversations, loaded, batch_size=batch_size, max_new_tokens=max_new_tokens, engine=engine,
                progress=lambda done, total: bar.update(task, completed=done),
            )
            outputs.update(zip(ids, texts))
        if multi:
            task = bar.add_task("multi-turn entries", total=sum(len(s.ids) for s in multi))
            outputs.update(run.rollout_outputs(
                multi, loaded, max_new_tokens=max_new_tokens, max_context=max_context, batch_size=batch_size,
                engine=engine, progress=lambda done, total: bar.update(task, completed=done),
            ))
    return outputs


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _ci(interval: dict) -> str:
    return f"[{100 * interval['low']:.1f}, {100 * interval['high']:.1f}]"


def _print_summary(result: dict, path: Path, unused: int) -> None:
    """One row per suite plus overall, each with its 95% Wilson interval; BFCL's groups; the
    held-out metrics in a last table."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="restlit eval")
    table.add_column("suite")
    for col in ("items", "passed", "accuracy %", "95% CI"):
        table.add_column(col, justify="right")
    summary = result["summary"]
    for name, s in summary.items():
        if name != "overall":
            table.add_row(name, str(s["items"]), str(s["passed"]), _pct(s["accuracy"]), _ci(s["interval"]))
    o = summary["overall"]
    table.add_row("overall", str(o["items"]), str(o["passed"]), _pct(o["accuracy"]), _ci(o["interval"]), style="bold")
    console.print(table)
    if len(summary) > 2:
        console.print(f"macro average over suites: {_pct(o['macro_accuracy'])} %")
    if result.get("groups"):
        groups = Table(title="groups (BFCL's leaderboard; API-Bank over all items)")
        groups.add_column("group")
        for col in ("categories", "items", "accuracy %", "95% CI"):
            groups.add_column(col, justify="right")
        for name, g in result["groups"].items():
            groups.add_row(name, str(len(g["of"])), str(g["items"]), _pct(g["accuracy"]), _ci(g["interval"]),
                           style="bold" if name == "overall" else None)
        console.print(groups)
    if "heldout" in summary:
        h = summary["heldout"]
        metrics = Table(title="heldout")
        metrics.add_column("metric")
        metrics.add_column("%", justify="right")
        for key in ("exact_match", "tool_name_accuracy", "param_precision", "param_recall", "param_f1",
                    "format_validity", "no_call_accuracy"):
            metrics.add_row(key.replace("_", " "), _pct(h[key]))
        console.print(metrics)
    if result["missing"]:
        console.print(f"[yellow]{result['missing']} items had no prediction (scored as failed)[/yellow]")
    if unused:
        console.print(f"[yellow]{unused} predictions matched no item of the chosen suites[/yellow]")
    console.print(f"per-item verdicts and reasons: {path}")
