"""Which files of an output directory restlit wrote: ``--overwrite`` removes those and nothing else.

A command that writes an output directory records what it writes in the directory's manifest
``.restlit-outputs.json`` (:func:`record`): ``files`` (paths relative to the directory) and
``trees`` (sub-directories restlit created whole, such as a logger's ``tensorboard/``, every file
in them being restlit's). A nested output with a manifest of its own (a run's ``report/``, a
demo's ``sft/``) answers for its own files.

:func:`claim` is what ``--overwrite`` checks before anything is removed: the previous output's
files, or one line naming the files in the way that restlit did not write (a user's
``report/notes.md``, ``checkpoints/other.pt``). A directory written by a restlit older than the
manifest has none: there only the files whose names restlit writes count as its own (the
``legacy`` rule each caller gives; for a run see :data:`restlit.training.checkpoints.RUN_FILES`),
anything else is refused. :func:`remove_owned` removes what :func:`claim` returned, then the
directories it leaves empty.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from restlit.runtime.outputs import OutputError, atomic_write_text, reason

MANIFEST = ".restlit-outputs.json"

__all__ = ["MANIFEST", "claim", "owned_files", "record", "remove_owned"]


def _read(directory: Path) -> dict | None:
    """The manifest's ``{"files": set, "trees": set}``; None when there is none; empty sets when it
    cannot be read (then nothing is known to be restlit's)."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    return {k: {x for x in data.get(k, ()) if isinstance(x, str)} for k in ("files", "trees")}


def _files_under(path: Path) -> list[Path]:
    """``path`` if it is a file or a link, else every file and link below it (links not followed)."""
    if path.is_symlink() or not path.is_dir():
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        out += [Path(root) / n for n in files]
        out += [Path(root) / d for d in dirs if (Path(root) / d).is_symlink()]
    return sorted(out)


def record(directory: str | Path, files: Iterable[str] = (), trees: Iterable[str] = ()) -> None:
    """Add ``files`` (relative paths; a directory adds every file in it now) and ``trees`` to
    ``directory``'s manifest, rewritten atomically (only on rank 0 of a run: one writer)."""
    directory = Path(directory)
    data = _read(directory) or {"files": set(), "trees": set()}
    new_files = set()
    for f in files:
        p = directory / f
        new_files.update(q.relative_to(directory).as_posix() for q in _files_under(p)) if p.is_dir() \
            else new_files.add(Path(f).as_posix())
    if new_files <= data["files"] and set(trees) <= data["trees"] and (directory / MANIFEST).is_file():
        return
    data["files"] |= new_files
    data["trees"] |= set(trees)
    atomic_write_text(directory / MANIFEST, json.dumps(
        {"version": 1, "files": sorted(data["files"]), "trees": sorted(data["trees"])}, indent=0) + "\n")


def _is_own(directory: Path, rel: str, data: dict | None, legacy: Callable[[str], bool]) -> bool:
    if Path(rel).name == MANIFEST:
        return True
    parts = rel.split("/")
    for i in range(len(parts) - 1, 0, -1):  # the nearest nested output with a manifest answers
        sub = directory.joinpath(*parts[:i])
        if (sub / MANIFEST).is_file():
            return _is_own(sub, "/".join(parts[i:]), _read(sub), lambda _: False)
    if data is None:
        return legacy(rel)
    return rel in data["files"] or any(rel.startswith(t + "/") for t in data["trees"])


def owned_files(directory: str | Path, entries: Iterable[str],
                legacy: Callable[[str], bool] = lambda _: False) -> tuple[list[Path], list[Path]]:
    """``(restlit's, foreign)``: the files under ``entries`` of ``directory``, split by the manifest
    (or, without one, by ``legacy(relative path)``)."""
    directory = Path(directory)
    data = _read(directory)
    own, foreign = [], []
    for e in entries:
        p = directory / e
        if not (p.exists() or p.is_symlink()):
            continue
        for f in _files_under(p):
            (own if _is_own(directory, f.relative_to(directory).as_posix(), data, legacy) else foreign).append(f)
    return own, foreign


def claim(directory: str | Path, entries: Iterable[str], *, overwrite: bool, what: str, hint: str,
          legacy: Callable[[str], bool] = lambda _: False) -> list[Path]:
    """What ``--overwrite`` may remove of an earlier output: [] when ``directory`` holds none of
    ``entries``; else an :class:`OutputError` without ``overwrite`` (``DIR already holds WHAT;
    HINT``), or with it when files restlit did not write are in the way (named); else restlit's
    files (for :func:`remove_owned`, once the new output is ready to start)."""
    directory = Path(directory)
    entries = list(entries)
    own, foreign = owned_files(directory, entries, legacy)
    if not own and not foreign:
        return []
    if not overwrite:
        raise OutputError(f"{directory} already holds {what}; {hint}")
    if foreign:
        names = ", ".join(str(f.relative_to(directory)) for f in foreign[:5])
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise OutputError(f"{directory}: --overwrite would remove files restlit did not write: {names}{more}; "
                          f"move them away or use another output directory")
    return [*own, directory / MANIFEST] if (directory / MANIFEST).is_file() else own


def remove_owned(directory: str | Path, files: Iterable[Path], entries: Iterable[str]) -> None:
    """Delete ``files`` (from :func:`claim`), then the directories they leave empty (up to, and
    including, their entry among ``entries``); nothing else is touched."""
    directory = Path(directory)
    tops = {directory / e for e in entries}
    emptied: set[Path] = set()
    for f in files:
        try:
            f.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"{f}: cannot remove the previous output: {reason(exc)}") from None
        parent = f.parent
        while parent != directory and any(parent == t or t in parent.parents for t in tops):
            emptied.add(parent)
            parent = parent.parent
    for d in sorted(emptied, key=lambda p: -len(p.parts)):
        try:
            d.rmdir()
        except OSError:
            pass  # not empty: a nested output's files stay
