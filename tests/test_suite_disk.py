"""The suite cleans up after itself: a passing test's temporary directory does not outlive it.

The suite writes ~3.6 GB of checkpoints and converted models over a run. Under pytest's default
retention every test's ``tmp_path`` stayed, for the last three runs, and on CI's reused ``/tmp`` that
filled the disk (``No space left on device``). ``pyproject.toml`` sets
``tmp_path_retention_policy = "failed"``; this runs pytest with that configuration on two small
tests and checks what is left.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

TESTS = '''
def test_passes(tmp_path):
    (tmp_path / "passed.bin").write_bytes(b"x" * 1024)

def test_fails(tmp_path):
    (tmp_path / "failed.bin").write_bytes(b"x" * 1024)
    assert False
'''


def test_a_passing_tests_tmp_path_is_removed_and_a_failing_ones_kept(tmp_path) -> None:
    (tmp_path / "test_two.py").write_text(TESTS)
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    env = {**os.environ, "TMPDIR": str(temp_root)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(REPO / "pyproject.toml"),
         "--rootdir", str(tmp_path), str(tmp_path / "test_two.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,  # one test fails on purpose
    )
    assert "1 failed, 1 passed" in run.stdout, run.stdout + run.stderr
    left = {p.name for p in temp_root.rglob("*.bin")}
    assert left == {"failed.bin"}, f"left behind: {sorted(left)}"
