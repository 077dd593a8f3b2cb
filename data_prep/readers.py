"""The readers, one per layout, and auto-detection of a file's layout from its first record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from data_prep import hammer, toolace, toolrl, xlam
from data_prep.records import Trace


@dataclass(frozen=True)
class Reader:
    """A layout: its name (also the samples' ``source``), a detector and a record reader."""

    name: str
    matches: Callable[[Any], bool]
    read: Callable[[Any], Trace]


# Order matters for detection: Hammer before ToolRL (both are instruction/input/output).
READERS: dict[str, Reader] = {
    m.SOURCE: Reader(m.SOURCE, m.matches, m.read) for m in (toolace, xlam, hammer, toolrl)
}
FORMATS = ("auto", *READERS)


def detect(record: Any) -> Reader | None:
    """The reader whose layout ``record`` has, or None."""
    for reader in READERS.values():
        if reader.matches(record):
            return reader
    return None


def describe(record: Any) -> str:
    """A short description of a record for "unrecognised layout" messages."""
    if isinstance(record, dict):
        keys = ", ".join(sorted(map(str, record))[:8])
        return f"an object with keys [{keys}]"
    return f"a JSON {type(record).__name__}"
