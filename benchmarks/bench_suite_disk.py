"""Disk the test suite uses in pytest's temporary directories, under each retention policy.

The suite runs in a child ``pytest`` with ``TMPDIR`` set to a fresh directory, once per policy
(``-o tmp_path_retention_policy=...``: ``all`` is pytest's default, ``failed`` what
``pyproject.toml`` sets). A thread measures that directory (``du``) every ``--every`` seconds: the
peak, and what is left when the run ends. Left behind x 4 (pytest keeps the last 3 runs, the 4th
running) is what a reused ``/tmp`` holds under ``all``.

    .venv/bin/python benchmarks/bench_suite_disk.py [--policies all failed] [-m "not slow"] [--no-record]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import markdown_table, record

REPO = Path(__file__).resolve().parents[1]


def _size(path: Path) -> int:
    """Bytes on disk under ``path`` (``du -sb``; 0 while it does not exist)."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout else 0


def _largest(path: Path, n: int = 2) -> str:
    """The ``n`` largest entries two levels under ``path`` (``du``), as "name size" text."""
    out = subprocess.run(["du", "-b", "--max-depth=2", str(path)], capture_output=True, text=True, check=False)
    entries = [(int(size), Path(name)) for size, name in (line.split("\t", 1) for line in out.stdout.splitlines())]
    entries = [(size, name) for size, name in entries if len(name.relative_to(path).parts) == 2]
    top = sorted(entries, key=lambda e: e[0], reverse=True)[:n]
    return ", ".join(f"`{name.relative_to(path)}` {size / 1e6:.0f} MB" for size, name in top) or "-"


def run_suite(policy: str, marker: str | None, every: float) -> dict:
    """One pytest run of the suite under ``policy``: peak and left-behind bytes, summary, seconds."""
    with tempfile.TemporaryDirectory(prefix="suite-disk-") as root:
        temp = Path(root)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
               f"tmp_path_retention_policy={policy}"] + (["-m", marker] if marker else [])
        peak, done = 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(every):
                peak = max(peak, _size(temp))

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        out = subprocess.run(cmd, cwd=REPO, env={**os.environ, "TMPDIR": root}, capture_output=True, text=True,
                             check=False)
        done.set()
        sampler.join()
        seconds = time.perf_counter() - started
        left, largest = _size(temp), _largest(temp)
        summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip()[-200:]
    return {"policy": policy, "peak": max(peak, left), "left": left, "largest": largest, "summary": summary, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", nargs="+", default=["all", "failed"], choices=["all", "failed", "none"])
    p.add_argument("-m", dest="marker", default=None, help="pytest marker expression (default: the whole suite)")
    p.add_argument("--every", type=float, default=2.0, help="seconds between measurements")
    p.add_argument("--no-record", action="store_true", help="print only; do not update RESULTS.md")
    args = p.parse_args()

    runs = [run_suite(policy, args.marker, args.every) for policy in args.policies]
    gb = 1e9
    table = markdown_table(
        ["tmp_path_retention_policy", "pytest summary", "wall s", "peak GB", "left behind GB",
         "reused /tmp under it (4 runs) GB", "largest left"],
        [[r["policy"], r["summary"], f"{r['seconds']:.0f}", f"{r['peak'] / gb:.2f}", f"{r['left'] / gb:.2f}",
          f"{(3 * r['left'] + r['peak']) / gb:.1f}", r["largest"]] for r in runs],
    )
    body = (f"`pytest -q` over {'the whole suite' if not args.marker else f'`-m {args.marker!r}`'}, `TMPDIR` a fresh "
            f"directory per run, measured with `du -sb` every {args.every:g} s; the last column is 3 runs left "
            f"behind plus one running (pytest keeps 3). `torchinductor_root` is torch's compile cache, which TMPDIR moves "
            f"into the measured directory; it is reused from run to run.\n\n{table}")
    print(body)
    if not args.no_record:
        command = "python benchmarks/bench_suite_disk.py" + (f' -m "{args.marker}"' if args.marker else "")
        record("bench_suite_disk", "Test suite: disk in pytest's temporary directories", body, command)


if __name__ == "__main__":
    main()
