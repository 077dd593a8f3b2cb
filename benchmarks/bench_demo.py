"""Wall time of ``make demo``'s job (``restlit demo --config configs/quickstart-cpu.yaml``), stage by
stage, and the figures the docs show (docs/concepts.md, docs/results.md).

The demo runs in a child process exactly as ``make demo`` runs it, into a fresh output directory and
(by default) a fresh model cache, so the one-off conversion of the embedded GGUF model is included,
as on a fresh clone. The environment set-up (``make``'s virtualenv and installs) is not: it depends
on the package cache, and ``.ci/run`` times it. The stage times come from the demo's own
``demo.json``; the peak memory is the child's ``ru_maxrss``.

Afterwards the run's report figures and ``report.md`` are copied into ``benchmarks/demo/`` (the
docs' figures come from there) and the table goes into ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/bench_demo.py [--workdir DIR] [--reuse-cache] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "benchmarks" / "demo"
GOAL_S = 20 * 60
COLUMNS = [("heldout format valid %", "heldout/format_validity"), ("heldout tool name %", "heldout/tool_name_accuracy"),
           ("heldout param F1 %", "heldout/param_f1"), ("heldout exact match %", "heldout/exact_match"),
           ("BFCL simple_python %", "bfcl:simple_python/accuracy")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", help="keep the demo's output here (default: a temporary directory)")
    p.add_argument("--reuse-cache", action="store_true", help="use the existing converted model (no conversion)")
    p.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md and benchmarks/demo/ alone")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from benchmarks._results import markdown_table, record

    work = Path(args.workdir or tempfile.mkdtemp(prefix="restlit-demo-"))
    out = work / "quickstart"
    if out.exists():
        shutil.rmtree(out)
    env = dict(os.environ)
    if not args.reuse_cache:
        env["RESTLIT_CACHE"] = str(work / "model-cache")
        shutil.rmtree(work / "model-cache", ignore_errors=True)
    restlit = Path(sys.executable).with_name("restlit")
    cmd = [str(restlit), "demo", "--config", "configs/quickstart-cpu.yaml",
           "--set", f"output_dir={out}", "--set", f"data.cache_dir={work / 'data-cache'}"]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()[0]
    if proc.returncode != 0:
        sys.exit(f"restlit demo failed with exit status {proc.returncode}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    summary = json.loads((out / "demo.json").read_text())
    seconds = summary["seconds"]

    stage_rows = [[stage, f"{s:.0f}", f"{100 * s / wall:.0f}%"] for stage, s in seconds.items() if stage != "total"]
    stage_rows.append(["process start and imports (the model conversion is in eval base)", f"{wall - seconds['total']:.0f}",
                       f"{100 * (wall - seconds['total']) / wall:.0f}%"])
    stage_rows.append(["**whole command**", f"**{wall:.0f}**", "100%"])
    model_rows = [[name] + [_cell(summary["intervals"][name].get(key)) for _, key in COLUMNS]
                  for name in summary["models"]]
    first = summary["intervals"][next(iter(summary["models"]))]
    heldout_items = first["heldout/exact_match"]["n"]
    bfcl_items = first["bfcl:simple_python/accuracy"]["n"]
    verdict = "met" if wall <= GOAL_S else "NOT met"
    setting = ("The job of `make demo` on the shipped sizes of `configs/quickstart-cpu.yaml` (SFT "
               "`sft.max_steps` x `sft.batch_size`, ResT `trainer.max_steps` x `trainer.prompts_per_step` x "
               f"`rollout.n`, eval {heldout_items} held-out + {bfcl_items} BFCL simple_python items per model, greedy), fresh "
               "output directory")
    body = "\n\n".join([
        setting + ("" if args.reuse_cache else " and fresh model cache (the GGUF conversion is included)")
        + f". 1-min load average before {load_before:.1f}, after {load_after:.1f}; peak RSS {peak:.2f} GiB.",
        markdown_table(["stage", "s", "share"], stage_rows),
        markdown_table(["model"] + [c for c, _ in COLUMNS], model_rows),
        (f"Goal: the demo within 20 minutes on this 2-core machine: **{verdict}** ({wall / 60:.1f} min). "
        f"A few optimizer steps on a few hundred records, and {heldout_items} + {bfcl_items} scored items per model "
        f"(one item is {100 / heldout_items:.1f} points; cells: % [95% Wilson interval] (items); parameter F1 counts "
        "triples, no interval): the machinery end to end on a real model, not a trained tool user. "
        "Figures of this run: `benchmarks/demo/`."),
    ])
    print(body)
    if args.no_record:
        return
    report_dir = Path(summary["report"]).parent
    FIGURES.mkdir(exist_ok=True)
    for old in FIGURES.glob("*"):
        old.unlink()
    for f in sorted(report_dir.glob("*.png")):
        shutil.copy2(f, FIGURES / f.name)
    text = (report_dir / "report.md").read_text().replace(str(out), "runs/quickstart")
    text = text.replace(str(work / "data-cache"), "runs/cache")  # the config's own values
    (FIGURES / "report.md").write_text(text)
    record("bench_demo", "`make demo`: the whole method on the embedded model, CPU", body,
           "python benchmarks/bench_demo.py")


def _cell(interval: dict | None) -> str:
    """``% [low, high] (n)`` of one demo.json interval; F1 (low == high) without the brackets."""
    if not interval or interval.get("value") is None:
        return "-"
    value, low, high, n = (interval[k] for k in ("value", "low", "high", "n"))
    if low == high == value:
        return f"{100 * value:.1f} ({n})"
    return f"{100 * value:.1f} [{100 * low:.1f}, {100 * high:.1f}] ({n})"


if __name__ == "__main__":
    main()
