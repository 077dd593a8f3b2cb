"""The process's memory between the phases of a step, on Linux with glibc (elsewhere: no-ops).

A CPU tensor's memory comes from glibc's ``malloc``. Blocks above the mmap threshold get their own
mapping and go straight back to the system when freed; smaller ones live on the heap, and a freed
heap block stays in the process, so the resident set (what a user, a scheduler or the OOM killer
sees) keeps each phase's high-water mark on top of the next phase's. Two measures, both changing
no value:

- :func:`release_large_frees` fixes the threshold at 4 MiB (glibc otherwise raises it, up to
  32 MiB, to the size of every large block it frees): activations, logits, KV caches and packed
  weights of that size are returned at once. A lower threshold faults every such allocation in
  afresh: at 1 MiB a step of workload W took 115 s instead of 98 (update 78 vs 61 s, mean of two steps) for a peak
  of 2.93 GiB instead of 3.40 (AMD EPYC, 2026-12-01); at 2 MiB 61 s instead of 54 (update 41 vs 34 s)
  for 2.96 GiB instead of 3.47 (Intel Xeon, 2026-12-02). So restlit keeps 4 MiB; a user short of
  memory can set ``MALLOC_MMAP_THRESHOLD_`` (bytes) in the environment, which wins.
- :func:`release` hands the heap's free pages back (``malloc_trim(0)``: the free top of each heap
  is returned, the free pages inside it ``madvise``\\d away). They are faulted in again only when
  reused, so a call costs milliseconds. ``fit`` and ``sft`` call it after each backward (one per
  prompt group in ``fit``) and after each training batch (``restlit.train.make_trainer``), the
  rollout engine after each ``generate`` (``restlit.rollout.hf``).

Measured on workload W, side by side in one run (``benchmarks/bench_step.py --modes entropy
entropy+untrimmed entropy+mmap1m``, RESULTS.md): peak RSS 3.40 GiB with :func:`release`, 3.78 GiB
without, 2.93 GiB at the 1 MiB threshold; steps 98, 108 and 115 s (the first two within this
machine's step-to-step noise: an earlier run gave 98 vs 98 s). What stays is live: the weights,
AdamW's two moments and the gradients are 2.2 GiB of float32 for SmolLM2-135M, the imported
libraries ~0.45 GiB.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

MMAP_THRESHOLD = 4 * 1024 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


@functools.cache
def _libc():
    """glibc, or None (another platform or C library)."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):  # musl and others: leave the allocator alone
        return None
    return libc


def release_large_frees() -> bool:
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD`, unless ``MALLOC_MMAP_THRESHOLD_`` is
    set in the environment (that wins). True when the threshold was set here."""
    libc = _libc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release() -> bool:
    """Give the heap's free pages back to the operating system; False where there is no glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
