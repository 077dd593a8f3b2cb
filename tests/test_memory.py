"""``restlit.memory``: freed heap memory goes back to the operating system (Linux, glibc)."""

from __future__ import annotations

import platform

import pytest
import torch

from restlit.kernels import memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_release_returns_freed_heap_pages():
    assert memory.release_large_frees()  # fixed 4 MiB threshold: 1 MiB blocks come from the heap
    memory.release()
    blocks = [torch.ones(256 * 1024) for _ in range(256)]  # 256 x 1 MiB, pages touched
    grown = _resident_bytes()
    del blocks[::2]  # 128 holes of 1 MiB between live blocks: free() cannot shrink the heap
    kept = _resident_bytes()
    assert memory.release()
    released = _resident_bytes()
    assert grown - kept < 32 * 2**20, (grown, kept, released)
    assert kept - released > 96 * 2**20, (grown, kept, released)
    assert all(float(b[0]) == 1.0 for b in blocks)  # the live blocks are untouched


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_an_mmap_threshold_in_the_environment_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert not memory.release_large_frees()
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert memory.release_large_frees()


def test_without_glibc_both_do_nothing(monkeypatch):
    monkeypatch.setattr(memory, "_libc", lambda: None)
    assert memory.release() is False
    assert memory.release_large_frees() is False
