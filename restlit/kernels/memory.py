"""The process's memory between the phases of a step, on Linux with glibc (elsewhere: no-ops).

A CPU tensor's memory comes from glibc's ``malloc``. Blocks above the mmap threshold get their own
mapping and go straight back to the system when freed; smaller ones live on the heap, and a freed
heap block stays in the process, so the resident set (what a user, a scheduler or the OOM killer
sees) keeps each phase's high-water mark on top of the next phase's. Two measures, both changing
no value:

- :func:`release_large_frees` fixes the threshold at 4 MiB (glibc otherwise raises it, up to
  32 MiB, to the size of every large block it frees): activations, logits, KV caches and packed
  weights of that size are returned at once. A lower threshold faults every such allocation in
  afresh: a lower peak for a slower step (``bench_step``'s ``mmap1m`` / ``mmap2m`` rows in
  ``benchmarks/RESULTS.md``). So restlit keeps 4 MiB; a user short of memory can set
  ``MALLOC_MMAP_THRESHOLD_`` (bytes) in the environment, which wins.
- :func:`release` hands the heap's free pages back (``malloc_trim(0)``: the free top of each heap
  is returned, the free pages inside it ``madvise``\\d away). They are faulted in again only when
  reused, so a call costs milliseconds. ``fit`` and ``sft`` call it after each backward (one per
  prompt group in ``fit``) and after each training batch (``restlit.training.run.make_trainer``), the
  rollout engine after each ``generate`` (``restlit.rollout.hf``).

What either saves on workload W is ``bench_step``'s ``entropy+untrimmed`` and ``entropy+mmap1m``
rows in ``benchmarks/RESULTS.md``. What stays is live: the weights, AdamW's two moments and the
gradients (four float32 copies of the parameters) and the imported libraries.
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
