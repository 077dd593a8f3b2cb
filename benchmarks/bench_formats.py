"""The demo (``restlit demo --config configs/quickstart-cpu.yaml``) in ToolRL's output format and in
``hermes``, side by side: wall time per stage and the scores of each model, so the cost of training
in a served format is measured, not assumed (the goal: ``hermes`` within 10% of ``toolrl``).

Each format runs in a child process with this checkout's code (``python -m restlit.cli.main demo``,
``PYTHONPATH`` set to the repository), one after the other, into fresh output directories under
``--workdir``; the model cache is shared (the one-off GGUF conversion happens before the first).
With ``--parallel`` the formats run at the same time, one thread each: both see the same machine
and the same load, so their ratio does not depend on what else ran before or after (the absolute
times are then those of one core). The table goes into ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/bench_formats.py [--formats toolrl hermes] [--parallel] [--workdir DIR] [--no-record]
    .venv/bin/python benchmarks/bench_formats.py --dry     # print the commands, run nothing
    .venv/bin/python benchmarks/bench_formats.py --tiny    # the tiny config, a few steps: does it run?
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/quickstart-cpu.yaml"
TINY = ["--config", "configs/tiny-test.yaml", "--heldout-limit", "2", "--bfcl-limit", "2", "--eval-tokens", "4",
        "--set", "sft.max_steps=1", "--set", "trainer.max_steps=1"]
COLUMNS = [("heldout format valid %", "heldout/format_validity"), ("heldout exact match %", "heldout/exact_match"),
           ("BFCL simple_python %", "bfcl:simple_python/accuracy")]
GOAL = 1.10


def command(fmt: str, work: Path, tiny: bool) -> list[str]:
    """The demo's command line for output format ``fmt`` into ``work/fmt``."""
    base = TINY if tiny else ["--config", CONFIG]
    return [sys.executable, "-m", "restlit.cli.main", "demo", *base, "--set", f"data.tool_format={fmt}",
            "--set", f"output_dir={work / fmt}", "--set", f"data.cache_dir={work / 'data-cache'}"]


def start(fmt: str, work: Path, tiny: bool, threads: int | None) -> tuple[subprocess.Popen, float]:
    """Start the demo in ``fmt`` (on ``threads`` threads, or torch's default); the process and its start time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen(command(fmt, work, tiny), cwd=REPO, env=env), time.perf_counter()


def finish(fmt: str, work: Path, returncode: int, wall: float) -> dict:
    """The demo in ``fmt`` exited with ``returncode`` after ``wall`` seconds: its wall time and ``demo.json``."""
    if returncode != 0:
        sys.exit(f"restlit demo in {fmt} failed with exit status {returncode}")
    return {"wall": wall, "demo": json.loads((work / fmt / "demo.json").read_text())}


def wait_all(running: dict[str, tuple[subprocess.Popen, float]], poll: float = 1.0) -> dict[str, tuple[int, float]]:
    """Wait for every process; each one's exit status and wall seconds, taken when *it* exits (not
    when the loop gets to it: waiting for them in order would give an early finisher the late one's time)."""
    done: dict[str, tuple[int, float]] = {}
    while len(done) < len(running):
        for name, (proc, t0) in running.items():
            if name not in done and proc.poll() is not None:
                done[name] = (proc.returncode, time.perf_counter() - t0)
        if len(done) < len(running):
            time.sleep(poll)
    return done


def run_all(formats: list[str], work: Path, tiny: bool, parallel: bool) -> dict[str, dict]:
    """Each format's demo: one after the other, or all at once on one thread each."""
    if not parallel:
        return {fmt: finish(fmt, work, *wait_all({fmt: start(fmt, work, tiny, None)})[fmt]) for fmt in formats}
    # the shared data cache is prepared under a lock and the model cache is written atomically: no race
    exits = wait_all({fmt: start(fmt, work, tiny, 1) for fmt in formats})
    return {fmt: finish(fmt, work, *exits[fmt]) for fmt in formats}


def _cell(interval: dict | None) -> str:
    if not interval or interval.get("value") is None:
        return "-"
    return f"{100 * interval['value']:.1f} ({interval['n']})"


def table(results: dict[str, dict]) -> str:
    """The stage table (seconds per format) and the score table (each format's models)."""
    from benchmarks._results import markdown_table

    formats = list(results)
    stages = [s for s in results[formats[0]]["demo"]["seconds"] if s != "total"]
    rows = [[stage] + [f"{results[f]['demo']['seconds'].get(stage, 0):.0f}" for f in formats] for stage in stages]
    rows.append(["**whole command**"] + [f"**{results[f]['wall']:.0f}**" for f in formats])
    scores = [[f, model] + [_cell(results[f]["demo"]["intervals"][model].get(key)) for _, key in COLUMNS]
              for f in formats for model in results[f]["demo"]["models"]]
    return "\n\n".join([markdown_table(["stage (s)", *formats], rows),
                        markdown_table(["format", "model"] + [c for c, _ in COLUMNS], scores)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", nargs="+", default=["toolrl", "hermes"])
    p.add_argument("--workdir", help="keep the demos' outputs here (default: a temporary directory)")
    p.add_argument("--parallel", action="store_true", help="run the formats at the same time, one thread each")
    p.add_argument("--dry", action="store_true", help="print the commands and exit")
    p.add_argument("--tiny", action="store_true", help="the tiny config with a few steps (checks the script runs)")
    p.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from restlit.formats import FORMATS

    unknown = [f for f in args.formats if f not in FORMATS]
    if unknown:
        sys.exit(f"unknown output format {unknown[0]!r}; choose among {', '.join(FORMATS)}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="restlit-formats-"))
    if args.dry:
        for fmt in args.formats:
            print(" ".join(command(fmt, work, args.tiny)))
        return
    for fmt in args.formats:
        if (work / fmt).exists():
            sys.exit(f"{work / fmt} exists: give a fresh --workdir")
    results = run_all(args.formats, work, args.tiny, args.parallel)
    body = table(results)
    first, walls = args.formats[0], {f: r["wall"] for f, r in results.items()}
    ratios = ", ".join(f"{f} / {first} = {walls[f] / walls[first]:.2f}" for f in args.formats[1:])
    verdict = "met" if all(walls[f] <= GOAL * walls[first] for f in args.formats[1:]) else "NOT met"
    body += (f"\n\nWall time ratios: {ratios}. Goal: every format within {100 * (GOAL - 1):.0f}% of {first}: "
             f"**{verdict}**. " + ("The demos ran at the same time, one thread each, so both saw the same machine "
                                   "and load; times are one core's." if args.parallel else
                                   "The demos ran one after the other on the same machine; the load of other "
                                   "processes moves both."))
    print(body)
    if args.no_record or args.tiny:
        return
    from benchmarks._results import record

    record("bench_formats", "The demo in each output format (`data.tool_format`), CPU", body,
           "python benchmarks/bench_formats.py" + (" --parallel" if args.parallel else ""))


if __name__ == "__main__":
    main()
