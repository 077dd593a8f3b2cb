"""Throughput of the region tagger on real completions, on one core.

    .venv/bin/python -m benchmarks.bench_regions

Tagging: MB/s of UTF-8 text through ``tag`` (all 400 reference outputs of ToolRL's sample, and
their ``<tool_call>`` parts alone, where the JSON scanner does the work).
Token mapping: tokens/s through ``token_regions`` with SmolLM2 tokenizer offsets, given the spans
(the training path tags once per completion) and including the tagging.
Goals (issue 2): >= 2 MB/s and >= 1M tokens/s.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from benchmarks._results import markdown_table, record
from restlit.models import load_tokenizer
from restlit.regions import tag, token_regions

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "toolrl" / "rlla_sft.json"
REPEATS = 7


def best_of(fn, repeats: int = REPEATS) -> tuple[float, float]:
    """(median, best) seconds over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    texts = [r["output"] for r in json.loads(DATA.read_text())]
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    tok = load_tokenizer("smollm2-135m")
    offsets = [tok(t, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"] for t in texts]
    n_tokens = sum(len(o) for o in offsets)
    spans = [tag(t) for t in texts]

    # The JSON scanner is the slow part per character: measure the tool-call blocks on their own too.
    calls = [t[t.index("<tool_call>"):] for t in texts if "<tool_call>" in t]
    call_mb = sum(len(t.encode()) for t in calls) / 1e6

    tag_med, tag_best = best_of(lambda: [tag(t) for t in texts])
    call_med, call_best = best_of(lambda: [tag(t) for t in calls])
    map_med, map_best = best_of(lambda: [token_regions(t, o, s) for t, o, s in zip(texts, offsets, spans)])
    both_med, both_best = best_of(lambda: [token_regions(t, o) for t, o in zip(texts, offsets)])

    rows = [
        ["tag", f"{megabytes:.2f} MB", f"{megabytes / tag_med:.1f} MB/s", f"{megabytes / tag_best:.1f} MB/s", ">= 2 MB/s"],
        ["tag, tool-call blocks only", f"{call_mb:.2f} MB", f"{call_mb / call_med:.1f} MB/s",
         f"{call_mb / call_best:.1f} MB/s", ">= 2 MB/s"],
        ["token_regions (spans given)", f"{n_tokens:,} tokens", f"{n_tokens / map_med / 1e6:.2f} M tok/s",
         f"{n_tokens / map_best / 1e6:.2f} M tok/s", ">= 1 M tok/s"],
        ["tag + token_regions", f"{n_tokens:,} tokens", f"{n_tokens / both_med / 1e6:.2f} M tok/s",
         f"{n_tokens / both_best / 1e6:.2f} M tok/s", ""],
    ]
    table = markdown_table(["operation", "input", "median", "best", "goal"], rows)
    print(table)
    record("bench_regions", "Region tagger throughput (one core)",
           f"{len(texts)} reference outputs of `toolrl/rlla_sft.json`, {REPEATS} repeats.\n\n{table}",
           "python -m benchmarks.bench_regions")


if __name__ == "__main__":
    main()
