"""``restlit demo``: the whole method on the embedded SmolLM2-135M, end to end on a CPU.

prepare the shipped sample -> evaluate the base model -> SFT warm start -> evaluate -> ResT fit
(entropy weights and curriculum) -> evaluate -> report; then one table with the three models.
Every stage uses the same functions as its own command; the settings are the config's
(``configs/quickstart-cpu.yaml``), the evaluation sizes are the demo's options.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from pathlib import Path
from typing import Any

from restlit.config import RunConfig
from restlit.experiments.ablation import evaluate, interval_cells, item_scores


def _stage(console: Any, title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def closing_table(title: str, columns: list[tuple[str, str, str]], cells: dict[str, dict[str, dict[str, Any]]]
                  ) -> Any:
    """The demo's closing table: one row per metric (``(label, suite, key)`` of ``columns``, with
    its item count), one column per model of ``cells`` (``model -> suite -> key -> Interval``),
    each cell the accuracy % over its 95% Wilson interval: narrow enough for 80 columns, where a
    column per metric broke every interval across lines."""
    from rich.table import Table

    table = Table(title=f"{title}\naccuracy % and [95% Wilson interval]")
    table.add_column("metric (items)")
    for name in cells:
        table.add_column(name, justify="right")
    for label, suite, key in columns:
        found = [c for model in cells.values() if (c := model.get(suite, {}).get(key)) is not None]
        row = f"{label} ({found[0].n})" if found else label
        table.add_row(row, *[_stacked(model.get(suite, {}).get(key)) for model in cells.values()])
    return table


def _stacked(interval: Any) -> str:
    """``62.5`` over ``[40.9, 80.0]``; a degenerate interval (parameter F1) as its value alone."""
    if interval is None:
        return "-"
    if interval.low == interval.high:
        return f"{100 * interval.value:.1f}"
    return f"{100 * interval.value:.1f}\n[{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


# What a demo writes into its output_dir besides the fit run itself.
DEMO_FILES = ("data", "base", "eval", "sft", "demo.json")


def run_demo(config: RunConfig, *, heldout_limit: int = 32, bfcl_category: str = "simple_python",
             bfcl_limit: int = 32, eval_tokens: int = 128, overwrite: bool = False) -> Path:
    """Run every stage into ``config.output_dir``; returns the report's path. ``OUT/demo.json``
    keeps each stage's seconds and the three models' scores. An output_dir that holds an earlier
    demo (or run) refuses unless ``overwrite``, which removes what the earlier demo wrote (its
    manifest, :mod:`restlit.runtime.owned`) and refuses, naming them, files it did not write."""
    from restlit.runtime import outputs
    from restlit.runtime.owned import claim, remove_owned
    from restlit.training.checkpoints import RUN_FILES

    entries = (*RUN_FILES, *DEMO_FILES)
    with outputs.lock(config.output_dir):
        remove_owned(config.output_dir, claim(config.output_dir, entries, overwrite=overwrite, what="a run",
                                              hint="use another output_dir or --overwrite", legacy=_is_demo_file),
                     entries)
        return _run_demo(config, heldout_limit=heldout_limit, bfcl_category=bfcl_category, bfcl_limit=bfcl_limit,
                         eval_tokens=eval_tokens)


def _is_demo_file(rel: str) -> bool:
    """The rule for a demo directory without a manifest (an older restlit): a run's files, the
    demo's ``demo.json`` and everything in the directories it creates whole."""
    from restlit.training.checkpoints import is_run_file

    return is_run_file(rel) or rel == "demo.json" or rel.split("/")[0] in ("data", "base", "eval")


def _run_demo(config: RunConfig, *, heldout_limit: int, bfcl_category: str, bfcl_limit: int,
              eval_tokens: int) -> Path:
    from rich.console import Console

    from restlit.data_prep.pipeline import prepare
    from restlit.runtime.owned import record
    from restlit.training.run import fit, sft

    console = Console()
    out = Path(config.output_dir)
    data_dir = out / "data"
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def done(stage: str, t: float) -> None:
        # A finished stage's trainer, module and optimizer hold each other in reference cycles;
        # collect them now, or the next stage's model and optimizer state come on top of them.
        gc.collect()
        seconds[stage] = round(time.perf_counter() - t, 1)
        console.print(f"({seconds[stage]:.0f} s)")
        record(out, [e for e in ("data", "base", "eval") if (out / e).exists()])  # what --overwrite may remove

    t = _stage(console, "1/7 prepare the shipped sample")
    manifest = prepare(config.data.raw, data_dir, format=config.data.format, on_invalid=config.data.on_invalid,
                       val_fraction=config.data.val_fraction, seed=config.data.seed)
    totals = manifest.totals
    splits = ", ".join(f"{k} {v}" for k, v in manifest.splits.items())
    console.print(f"{totals.records_read} records -> {totals.samples_written} samples ({splits}); "
                  f"{totals.turns_rejected + totals.records_rejected} rejected, reasons in {data_dir / 'rejects.jsonl'}")
    done("prepare", t)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, prepared=str(data_dir), raw=[]))

    evals: dict[str, dict[str, Any]] = {}
    bfcl = f"bfcl:{bfcl_category}"
    suites = {"heldout": heldout_limit, bfcl: bfcl_limit}
    kwargs = {"max_new_tokens": eval_tokens, "console": console, "fmt": config.data.tool_format}
    t = _stage(console, "2/7 evaluate the base model")
    base = config.model.path
    if config.model.init == "random":  # the initial policy exists only in memory: save it to score it
        from restlit.training.run import build_tokenizer_and_policy

        tokenizer, policy = build_tokenizer_and_policy(config)
        base = str(out / "base")
        policy.save_pretrained(base)
        tokenizer.save_pretrained(base)
        del policy
    evals["base"] = evaluate(base, suites, data_dir, out / "eval" / "base", **kwargs)
    done("eval base", t)

    t = _stage(console, "3/7 SFT warm start")
    sft_model = sft(config) / "final"
    done("sft", t)
    t = _stage(console, "4/7 evaluate the SFT model")
    evals["SFT"] = evaluate(str(sft_model), suites, data_dir, out / "eval" / "sft", **kwargs)
    done("eval SFT", t)

    t = _stage(console, "5/7 ResT fit (entropy weights, curriculum)")
    rest_config = dataclasses.replace(config, model=dataclasses.replace(config.model, path=str(sft_model), init="pretrained"))
    run_dir = fit(rest_config)
    done("fit", t)
    t = _stage(console, "6/7 evaluate the ResT model")
    evals["ResT"] = evaluate(str(run_dir / "final"), suites, data_dir, out / "eval" / "rest", **kwargs)
    done("eval ResT", t)

    t = _stage(console, "7/7 report")
    from restlit.report import build_report

    report = build_report(run_dir).markdown
    done("report", t)

    columns = [("heldout format valid", "heldout", "format_validity"),
               ("heldout tool name", "heldout", "tool_name_accuracy"),
               ("heldout param F1", "heldout", "param_f1"),
               ("heldout exact match", "heldout", "exact_match"),
               (f"BFCL {bfcl_category}", bfcl, "accuracy")]
    cells = {name: {suite: interval_cells(scores) for suite, scores in item_scores(result).items()}
             for name, result in evals.items()}
    console.print(closing_table(f"restlit demo: SmolLM2-135M, {time.perf_counter() - started:.0f} s in all",
                                columns, cells))
    console.print("Parameter F1 counts (tool, parameter, value) triples, not items: no interval. "
                  "Tool-name accuracy counts the items whose reference makes a call.")
    console.print(f"report: {report}")
    summary = {"seconds": {**seconds, "total": round(time.perf_counter() - started, 1)},
               "models": {name: {f"{suite}/{key}": result["summary"].get(suite, {}).get(key)
                                 for _, suite, key in columns} for name, result in evals.items()},
               "intervals": {name: {f"{suite}/{key}": (c.to_dict() if (c := cells[name].get(suite, {}).get(key))
                                                       else None) for _, suite, key in columns} for name in evals},
               "report": str(report)}
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    record(out, ["demo.json"])
    return report
