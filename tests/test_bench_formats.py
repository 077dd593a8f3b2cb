"""benchmarks/bench_formats.py --parallel: each demo's wall time is taken when that demo exits."""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks.bench_formats import wait_all


def _sleeper(seconds: float) -> tuple[subprocess.Popen, float]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"]), time.perf_counter()


def test_an_early_finisher_keeps_its_own_wall_time():
    # the slow one first: waiting for them in order would give the fast one the slow one's time
    exits = wait_all({"slow": _sleeper(2.0), "fast": _sleeper(0.1)}, poll=0.05)
    assert exits["slow"][0] == exits["fast"][0] == 0
    assert exits["fast"][1] < exits["slow"][1] - 1.0


def test_an_exit_status_is_kept():
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    assert wait_all({"bad": (proc, time.perf_counter())}, poll=0.05)["bad"][0] == 3
