"""Write one benchmark's table into benchmarks/RESULTS.md, replacing only its own section.

Each benchmark owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``, so the
scripts can be rerun in any order without touching each other's results.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """A one-line description of this machine (cores, memory, CPU model, Python)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{os.cpu_count()} cores{mem}, {cpu}, Python {platform.python_version()}"


def record(name: str, title: str, body: str, command: str) -> None:
    """Replace (or append) section ``name`` of RESULTS.md with ``body`` plus date/machine/command."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (
        f"<!-- {name}:start -->\n## {title}\n\n"
        f"- date: {stamp}\n- machine: {machine()}\n- command: `{command}`\n\n"
        f"{body.rstrip()}\n<!-- {name}:end -->"
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\nWritten by the scripts in this folder; rerun one to refresh its section.\n"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->", re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text if text.endswith("\n") else text + "\n")


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
