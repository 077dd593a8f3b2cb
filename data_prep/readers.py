"""The readers, one per layout, and detection of a file's layout from its first records.

Detection never guesses: a record is claimed by a reader only if its fields and roles are that
reader's (the readers' ``matches`` are disjoint on every layout we know), and
:func:`detect_file` refuses a file whose first records fit no reader, fit two, or fit different
ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from restlit.data_prep import chat, hammer, sharegpt, toolace, toolrl, xlam
from restlit.data_prep.records import Trace

# How many records from the start of a file detection looks at.
DETECT_RECORDS = 16


@dataclass(frozen=True)
class Reader:
    """A layout: its name (also the samples' ``source``), a detector and a record reader."""

    name: str
    matches: Callable[[Any], bool]
    read: Callable[[Any], Trace]


READERS: dict[str, Reader] = {
    m.SOURCE: Reader(m.SOURCE, m.matches, m.read) for m in (toolace, sharegpt, chat, xlam, hammer, toolrl)
}
FORMATS = ("auto", *READERS)


class LayoutError(ValueError):
    """A file's layout cannot be told from its first records; the message is one line."""


def matching(record: Any) -> list[Reader]:
    """Every reader whose layout ``record`` has (one, or none, for the layouts we know)."""
    return [r for r in READERS.values() if r.matches(record)]


def detect(record: Any) -> Reader | None:
    """The reader whose layout ``record`` has, or None (also when two claim it)."""
    found = matching(record)
    return found[0] if len(found) == 1 else None


def detect_file(records: Sequence[tuple[int, Any]]) -> Reader:
    """The one layout of a file's first ``(index, record)`` pairs; LayoutError otherwise.

    Records that fit no layout are allowed beside the ones that do (they are rejected later,
    with their reason), but not when none fits, nor when a record fits two layouts, nor when
    two records fit different ones.
    """
    first: dict[str, int] = {}
    for index, record in records:
        found = matching(record)
        if len(found) > 1:
            raise LayoutError(f"record {index} fits two layouts ({', '.join(r.name for r in found)}); "
                              "choose one with --format")
        if found:
            first.setdefault(found[0].name, index)
    if not first:
        what = describe(records[0][1]) if records else "missing"
        raise LayoutError(f"unrecognised layout (first record is {what}); expected one of {', '.join(READERS)} "
                          "(see --format)")
    if len(first) > 1:
        where = ", ".join(f"{name} at record {i}" for name, i in first.items())
        raise LayoutError(f"its first records fit different layouts ({where}); "
                          "give each layout its own file, or choose one with --format")
    return READERS[next(iter(first))]


def describe(record: Any) -> str:
    """A short description of a record for "unrecognised layout" messages."""
    if isinstance(record, dict):
        keys = ", ".join(sorted(map(str, record))[:8])
        return f"an object with keys [{keys}]"
    return f"a JSON {type(record).__name__}"
