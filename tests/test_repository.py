"""The repository owns what it needs: no file refers to data or docs outside the checkout."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO

# A path that climbs out of the repository into the project's shared folder, written as the
# relative path or as a path segment (split so that this file does not match itself).
OUTSIDE = ("../" + "shared", "/" + "shared/", "shared" + "/data", "shared" + "/docs")


def tracked_text_files() -> list:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    files = []
    for name in out.stdout.splitlines():
        path = REPO / name
        if path.suffix in {".png", ".gz", ".parquet"} or not path.is_file():
            continue
        files.append(path)
    return files


def test_no_file_refers_to_the_shared_folder() -> None:
    offenders = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if any(marker in line for marker in OUTSIDE):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()[:80]}")
    assert not offenders, "files refer to a folder outside the repository:\n" + "\n".join(offenders)


def test_the_check_can_fail(tmp_path) -> None:
    assert any(marker in "see ../" + "shared/" + "data/x.json" for marker in OUTSIDE)
