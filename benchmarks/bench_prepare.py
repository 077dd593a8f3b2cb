"""Throughput and peak memory of ``restlit prepare`` on a 60,000-record xLAM-layout file.

The file is built by resampling ``configs/data/demo_xlam.json`` (the demo sample) and perturbing each
copy (tool order shuffled, argument values changed in type-preserving ways, fresh ids), so
tool lists and calls differ from record to record as in the real 60k set. ``restlit prepare``
then runs in a child process, end to end (interpreter start and imports included); its wall
time gives records/s; peak memory is reported for the largest single process (``ru_maxrss``)
and for the whole process tree (prepare and its workers, sampled from /proc every 100 ms), both
as RSS and as anonymous RSS (RSS minus file-backed pages, i.e. without the memory-mapped
output files ``datasets`` reads back while saving).

    .venv/bin/python benchmarks/bench_prepare.py [--records 60000] [--workdir DIR] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "configs" / "data" / "demo_xlam.json"
GOAL = 5000.0


def _perturb_value(value, rng: random.Random):
    """A different value of the same JSON type (so schema validity is unchanged)."""
    if isinstance(value, bool):
        return value if rng.random() < 0.5 else not value
    if isinstance(value, int):
        return max(0, value + rng.randint(-3, 3)) if value >= 0 else value - rng.randint(0, 3)
    if isinstance(value, float):
        return round(value * rng.uniform(0.5, 1.5), 4)
    if isinstance(value, str):
        return value + rng.choice(["", "", " x", "-2", " (alt)"]) if value else value
    if isinstance(value, list):
        return [_perturb_value(v, rng) for v in value]
    if isinstance(value, dict):
        return {k: _perturb_value(v, rng) for k, v in value.items()}
    return value


def build(path: Path, n: int, seed: int = 0) -> None:
    """Write ``n`` perturbed xLAM records to ``path`` as one JSON list (xLAM's own container)."""
    base = json.loads(SAMPLE.read_text())
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[\n")
        for i in range(n):
            rec = rng.choice(base)
            tools = json.loads(rec["tools"])
            rng.shuffle(tools)
            answers = json.loads(rec["answers"])
            for a in answers:
                a["arguments"] = {k: _perturb_value(v, rng) for k, v in a["arguments"].items()}
            out = {"id": i, "query": rec["query"] + rng.choice(["", " Thanks.", " Please hurry.", ""]),
                   "tools": json.dumps(tools, ensure_ascii=False), "answers": json.dumps(answers, ensure_ascii=False)}
            fh.write(("," if i else "") + json.dumps(out, ensure_ascii=False) + "\n")
        fh.write("]\n")


def _tree_memory_mib(root: int) -> tuple[float, float]:
    """``(RSS, anonymous RSS)`` of ``root`` plus all its descendants (Linux /proc), in MiB.

    Anonymous memory excludes file-backed pages, such as the pages of the written Arrow files
    that ``datasets`` memory-maps while saving: those grow with the output but are page cache,
    not memory the process holds.
    """
    tree, frontier = [root], [root]
    while frontier:  # walk the tree via /proc/PID/task/PID/children: cheap, no full /proc scan
        pid = frontier.pop()
        try:
            children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            continue
        tree += children
        frontier += children
    rss = anon = 0
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields.get("VmRSS", "0 kB").split()[0])
        anon += int(fields.get("RssAnon", "0 kB").split()[0])
    return rss / 1024, anon / 1024


def run_measured(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run ``cmd``; return the result, wall seconds, and the peak RSS and peak anonymous RSS
    (MiB) of its process tree, workers included, sampled every 100 ms."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0.0, 0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss, anon = _tree_memory_mib(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], anon)
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), wall, peak[0], peak[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the input and output here.")
    parser.add_argument("--no-record", action="store_true", help="Do not write benchmarks/RESULTS.md.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "xlam_60k.json"
        out = work / "prepared"
        t0 = time.perf_counter()
        build(data, args.records)
        build_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "restlit.cli.main", "prepare", str(data), "-o", str(out)]
        load_before = os.getloadavg()[0]
        proc, wall, tree_rss, tree_anon = run_measured(cmd)
        if proc.returncode != 0:
            sys.exit(f"restlit prepare failed ({proc.returncode}):\n{proc.stderr}")
        # largest single process, exact from the kernel (the sampler can miss short peaks)
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out_mib = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
        manifest = json.loads((out / "manifest.json").read_text())
        totals = manifest["totals"]
        size_mib = data.stat().st_size / 2**20

    rate = args.records / wall
    rows = [
        ["records (xLAM layout, JSON list)", f"{args.records:,}"],
        ["input size", f"{size_mib:.1f} MiB"],
        ["samples written / turns rejected", f"{totals['samples_written']:,} / {totals['turns_rejected']:,}"],
        ["wall time, end to end", f"{wall:.2f} s"],
        ["throughput", f"{rate:,.0f} records/s (goal >= {GOAL:,.0f})"],
        ["output size on disk", f"{out_mib:.0f} MiB"],
        ["1-min load average before the run (other work on the machine)", f"{load_before:.1f}"],
        ["peak RSS, largest single process (ru_maxrss)", f"{peak_mib:,.0f} MiB"],
        ["peak RSS, prepare + workers (sampled)", f"{tree_rss:,.0f} MiB"],
        ["peak anonymous RSS, prepare + workers (sampled)", f"{tree_anon:,.0f} MiB"],
    ]
    from benchmarks._results import markdown_table, record

    table = markdown_table(["measure", "value"], rows)
    print(table)
    print(f"(input built in {build_s:.1f} s; counts reconcile: "
          f"{totals['records_read'] == totals['records_rejected'] + totals['records_with_samples'] + totals['records_without_samples']})")
    if not args.no_record:
        record("bench_prepare", "restlit prepare: 60k xLAM records",
               table + f"\n\nGoal >= {GOAL:,.0f} records/s: {'met' if rate >= GOAL else 'NOT met'}.",
               "python benchmarks/bench_prepare.py")


if __name__ == "__main__":
    main()
