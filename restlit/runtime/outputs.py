"""Output directories that never lose a user's data: one writer at a time, no silent overwrite,
replacements that are complete before the old output goes. Used by ``fit``, ``sft`` and ``demo``;
any command that writes a directory can use the same calls:

- ``with lock(directory):`` -- at most one restlit process writes ``directory``: the lock file
  ``directory/.restlit.lock`` holds the PID and host of its writer; a second writer fails with one
  line naming them; a lock left by a dead process on this host is taken over. Re-entrant within
  one process (``demo`` locks its directory, then ``fit`` locks the same one).
- ``existing(directory, entries, overwrite=...)`` -- the entries of a previous result found in
  ``directory``; refuses (:class:`OutputError`) when there are some and ``overwrite`` is false.
  Remove them with ``remove(...)`` once the new run is ready to write, so a run that fails to start
  leaves the old one intact.
- ``replace_dir(target, write)`` -- ``write(tmp)`` fills a temporary sibling, which then takes
  ``target``'s place; a failed write leaves ``target`` as it was and no temporary directory.
- ``atomic_write(path, write)`` / ``atomic_write_text(path, text)`` -- a file written into a
  temporary sibling created exclusively (a random name, ``O_EXCL``: a planted link is never
  followed), synced, then renamed over ``path``; a ``path`` that is a symbolic link is refused.
- ``refuse_links(directory, entries)`` -- one line when any of ``entries`` in ``directory`` is a
  symbolic link: restlit never writes through a link it did not make.
- ``with stop_on_sigterm(message):`` -- SIGTERM raises a one-line error where the block is, so its
  cleanup runs (Python's default SIGTERM ends the process at once and leaves temporary files);
  ``with sigterm_shield():`` inside it marks a step that must not be cut midway (the stop waits
  for its end). ``prepare``, ``fit`` and ``sft`` use this one mechanism.
- ``is_rank_zero()`` -- whether this process is global rank 0 of a distributed launch (torchrun,
  SLURM, Lightning's own launcher), read from the environment before any process group exists:
  only rank 0 locks, checks and writes the run's shared files.

Every failure is an :class:`OutputError` (a :class:`~restlit.errors.UserError`, one line naming the path).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from restlit.errors import UserError

LOCK_NAME = ".restlit.lock"
_held: dict[Path, int] = {}  # directories this process has locked, with their nesting depth


class OutputError(UserError, OSError):
    """An output that cannot be written, or that would overwrite or share a run; one line."""


def reason(exc: BaseException) -> str:
    """The first line of why an OS call failed (``No space left on device``)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def write_reason(exc: BaseException, directory: str | Path) -> str:
    """:func:`reason` for a failed write into ``directory``; a library's own wording of a full
    disk (torch's ``PytorchStreamWriter failed writing file``) becomes ``No space left on
    device`` when the disk is (nearly) full."""
    try:
        full = _free_bytes(Path(directory)) < 16 << 20
    except OSError:
        full = False
    if full and not (isinstance(exc, OSError) and exc.errno is not None):
        return os.strerror(errno.ENOSPC)
    return reason(exc)


def is_rank_zero() -> bool:
    """False in every process but global rank 0 of a distributed launch (``RANK`` from torchrun,
    ``SLURM_PROCID`` from srun, ``LOCAL_RANK`` / ``NODE_RANK`` from Lightning's launcher)."""
    return all(os.environ.get(k, "0") in ("", "0") for k in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


def writable_dir(directory: str | Path) -> Path:
    """``directory``, created if missing; one line when it cannot be."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".restlit-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"{directory}: cannot write here: {reason(exc)}") from None
    return directory


def refuse_links(directory: str | Path, entries: Iterable[str]) -> None:
    """An :class:`OutputError` naming the first of ``entries`` inside ``directory`` that is a
    symbolic link (restlit would write through it, outside the output directory)."""
    for e in entries:
        p = Path(directory) / e
        if p.is_symlink():
            raise OutputError(f"{p} is a symbolic link; restlit does not write through links it did not make: "
                              f"remove it or use another output directory")


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", **kwargs: object) -> Iterator[IO]:
    """``with atomic_write(path) as f:`` -- ``f`` is a new temporary sibling of ``path``, created
    exclusively under a random name (a planted file or link there is never followed), synced and
    renamed over ``path`` when the block ends; the block's failure removes it and leaves ``path``
    as it was. A ``path`` that is a symbolic link, and a write that fails (full disk), end in an
    :class:`OutputError` naming ``path``."""
    path = Path(path)
    refuse_links(path.parent, [path.name])
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {reason(exc)}") from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` with :func:`atomic_write`; returns ``path``."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def stop_on_sigterm(message: str, error: type[UserError] = UserError) -> Iterator[None]:
    """In the ``with`` block (main thread only), SIGTERM raises ``error(message)`` where the block is,
    so its cleanup runs (a temporary copy removed, the lock released, workers stopped) instead of
    the process ending at once; a second SIGTERM is ignored until the block is left.

    Inside a :func:`sigterm_shield` block the stop waits for that block to end. A stop raised
    where Python cannot pass it on (a finalizer, ``__del__``: it prints "Exception ignored" and
    goes on) is raised again by :func:`raise_if_stopped`, at the next shielded block, and at the
    end of this block at the latest: a stopped run never ends as if it had not been stopped."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop; the cleanup runs undisturbed
        _stop.error = error(message)
        if not _stop.depth:
            raise _stop.error

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        stopped, _stop.error = _stop.error, None
    if stopped is not None:  # the block ended normally: the raise was swallowed on the way
        raise stopped


class _Stop:
    depth = 0  # open sigterm_shield blocks
    error: UserError | None = None  # the stop of the open stop_on_sigterm block, once SIGTERM came


_stop = _Stop()


def raise_if_stopped() -> None:
    """Raise the stop of the open :func:`stop_on_sigterm` block if SIGTERM came (and its raise was
    swallowed or is waiting for a shielded block): call it before a step that must not run after
    a stop, such as putting an output in place."""
    if _stop.error is not None and not _stop.depth:
        raise _stop.error


@contextmanager
def sigterm_shield() -> Iterator[None]:
    """A block that must not be cut in the middle: a :func:`stop_on_sigterm` stop arriving in it is
    raised when it ends (the stop, not what the block then failed with, is the error; the failure
    is its cause). ``ProcessPoolExecutor.submit`` is one: it spawns a worker by writing its start-up
    data to a pipe, and a worker stopped midway reads a cut pipe and prints EOFError's traceback.
    Main thread only (the signal handler runs there)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raise_if_stopped()
    _stop.depth += 1
    broken: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        broken = exc
        raise
    finally:
        _stop.depth -= 1
        if not _stop.depth and _stop.error is not None:
            raise _stop.error from broken


def _holder(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another host's process cannot be checked from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


@contextmanager
def lock(directory: str | Path) -> Iterator[Path]:
    """Hold ``directory``'s lock file for the ``with`` block (see the module docstring). A directory
    the lock had to create and that is still empty when the block ends (e.g. a command that failed
    before writing anything) is removed again, so a failure leaves the disk as it found it."""
    created = not Path(directory).exists()
    directory = writable_dir(directory).resolve()
    if directory in _held:
        _held[directory] += 1
        try:
            yield directory
        finally:
            _held[directory] -= 1
        return
    path = directory / LOCK_NAME
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and _alive(holder):
                raise OutputError(
                    f"{directory} is in use by process {holder.get('pid')} on {holder.get('host')} "
                    f"(lock file {path}; delete it if that process is gone)") from None
            path.unlink(missing_ok=True)  # stale: its writer is dead (or the file is unreadable)
            continue
        try:
            with os.fdopen(fd, "w") as f:
                f.write(mine + "\n")
        except OSError as exc:  # a full disk: the empty lock file would block the next run
            path.unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot take the lock: {reason(exc)}") from None
        break
    else:
        raise OutputError(f"{path}: cannot take the lock (another process keeps taking it)")
    _held[directory] = 1
    try:
        yield directory
    finally:
        del _held[directory]
        if _holder(path) == json.loads(mine):
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):  # not empty (the command wrote its outputs): kept
                directory.rmdir()


def existing(directory: str | Path, entries: Iterable[str], *, overwrite: bool, what: str = "a run",
             hint: str = "use --resume, another output_dir, or --overwrite") -> list[Path]:
    """The ``entries`` (names inside ``directory``) that already exist; an :class:`OutputError`
    ``DIR already holds a run; use ...`` when there are any and ``overwrite`` is false."""
    found = [Path(directory) / e for e in entries if (Path(directory) / e).exists()]
    if found and not overwrite:
        raise OutputError(f"{directory} already holds {what}; {hint}")
    return found


def remove(paths: Iterable[Path]) -> None:
    """Delete files and directories (what :func:`existing` found, once ``--overwrite`` is given)."""
    for p in paths:
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError(f"{p}: cannot remove the previous output: {reason(exc)}") from None


def replace_dir(target: str | Path, write: Callable[[Path], object]) -> Path:
    """Fill a temporary sibling of ``target`` with ``write(tmp)``, then put it in ``target``'s place
    (the previous ``target``, if any, is removed only after the new one is complete)."""
    target = Path(target)
    parent = writable_dir(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    old = parent / f".{target.name}.old-{os.getpid()}"
    try:
        try:
            write(tmp)
        except OSError as exc:
            raise OutputError(f"{target}: cannot write: {reason(exc)}") from None
        if target.exists():
            target.rename(old)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return target


__all__ = ["LOCK_NAME", "OutputError", "atomic_write", "atomic_write_text", "existing", "is_rank_zero", "lock",
           "raise_if_stopped", "reason", "refuse_links", "remove", "replace_dir", "sigterm_shield", "stop_on_sigterm",
           "writable_dir", "write_reason"]
