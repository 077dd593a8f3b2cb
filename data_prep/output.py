"""Where ``prepare`` writes: the checks on ``-o``, the staging directory and the atomic replace.

A user's data is never lost: an output directory that holds a previous prepared dataset is
replaced only with ``overwrite``, one that holds anything prepare does not write is never
touched, and the new output is built complete in a sibling staging directory before the old one
is moved aside. If the old one cannot be moved aside the new one is kept under a reported name;
if the moved-aside old one cannot be deleted, its name is reported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from shutil import rmtree

from restlit.data_prep.inputs import InputError

# What a prepared dataset directory holds (datasets' DatasetDict files and prepare's own).
WRITTEN = frozenset({"dataset_dict.json", "train", "validation", "manifest.json", "rejects.jsonl", "parquet"})


def check(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """InputError (one line) unless ``prepare`` may write to ``out`` (never the current directory
    or one that holds it: the output is built beside ``out`` and then takes its place)."""
    resolved, here = out.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise InputError(f"{out}: is the current directory or holds it; prepare builds its output beside -o and "
                         f"then moves it there: give a new directory (-o data)")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if out.is_dir():
        entries = sorted(p.name for p in out.iterdir())
        if entries and not (out / "manifest.json").is_file():
            raise InputError(f"{out}: exists, is not empty and is not a prepared dataset (no manifest.json); "
                             "choose another output directory")
        if entries and not overwrite:
            raise InputError(f"{out} already holds a prepared dataset; use another -o or --overwrite")
        foreign = [name for name in entries if name not in WRITTEN]
        if foreign:
            raise InputError(f"{out}: holds files prepare did not write ({', '.join(foreign[:3])}); "
                             "move them out or use another -o")
    for p in inputs:
        if resolved == p.resolve() or resolved in p.resolve().parents:
            raise InputError(f"{out}: the output directory contains the input {p}")


def _free(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... whichever does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def staging_dir(out: Path) -> Path:
    """A fresh, empty sibling of ``out`` to build the output in; InputError when ``out``'s parent
    cannot be written."""
    staging = _free(out.parent / f".{out.name}.partial-{os.getpid()}")
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot write there ({exc.strerror or exc})") from None
    return staging


def replace(staging: Path, out: Path, overwrite: bool) -> list[str]:
    """Move the complete ``staging`` to ``out``, replacing what is there; returns warning lines.

    InputError (one line, naming where the new output is) when the old output cannot be moved
    aside, or when ``out`` was filled since :func:`check` and ``overwrite`` is not given: the old
    one stays in place and the new one is kept beside it.
    """
    old = None
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        # written since the checks at the start (another run): not ours to replace
        kept = _free(out.with_name(f"{out.name}.new"))
        os.rename(staging, kept)
        raise InputError(f"{out}: was written by someone else while this run prepared; "
                         f"the new dataset is at {kept}")
    if out.exists():
        old = _free(out.with_name(f"{out.name}.previous"))
        try:
            os.rename(out, old)
        except OSError as exc:
            kept = _free(out.with_name(f"{out.name}.new"))
            os.rename(staging, kept)
            raise InputError(f"{out}: cannot replace the previous dataset ({exc.strerror or exc}); it is untouched, "
                             f"and the new one is at {kept}") from None
    try:
        os.rename(staging, out)
    except OSError as exc:
        if old is not None:
            os.rename(old, out)
        kept = _free(out.with_name(f"{out.name}.new"))
        os.rename(staging, kept)
        raise InputError(f"{out}: cannot write there ({exc.strerror or exc}); the new dataset is at {kept}") from None
    if old is None:
        return []
    try:
        rmtree(old)
    except OSError as exc:
        return [f"{out}: the previous dataset could not be deleted ({exc.strerror or exc}); it is at {old}"]
    return []
