"""The record of a ``prepare`` run: per-input and per-source counts, and ``manifest.json``.

:class:`Counts` holds what happened to the records of one input (or one source, or all of
them); its invariants are described in :mod:`restlit.data_prep.pipeline`. :class:`InputInfo` is
one input file with its counts, and :class:`Manifest` the whole run as written to
``manifest.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from restlit import __version__
from restlit.data_prep.samples import SCHEMA_VERSION


@dataclass
class Counts:
    """What happened to the records of one input or one source (the rules that make it
    reconcile are in :mod:`restlit.data_prep.pipeline`)."""

    records_read: int = 0
    records_rejected: int = 0
    records_with_samples: int = 0
    records_without_samples: int = 0
    turns: int = 0
    samples_written: int = 0
    turns_rejected: int = 0
    coerced: int = 0
    masked: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    unknown_roles: dict[str, int] = field(default_factory=dict)

    def reconciles(self) -> bool:
        """True when every record and every turn read is accounted for exactly once."""
        return (
            self.records_read == self.records_rejected + self.records_with_samples + self.records_without_samples
            and self.turns == self.samples_written + self.turns_rejected
            and sum(self.rejected.values()) == self.records_rejected + self.turns_rejected
        )

    def add(self, other: Counts) -> None:
        """Accumulate ``other`` into this one."""
        for name in _COUNT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for mine, theirs in ((self.rejected, other.rejected), (self.warnings, other.warnings),
                             (self.unknown_roles, other.unknown_roles)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; reason and warning keys sorted for stable output."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _COUNT_FIELDS}
        out["rejected"] = dict(sorted(self.rejected.items()))
        out["warnings"] = dict(sorted(self.warnings.items()))
        out["unknown_roles"] = dict(sorted(self.unknown_roles.items()))
        return out

    def majority_reject(self) -> str | None:
        """``"N of M ... rejected as REASON"`` when one reason took more than half of the turns
        (a record rejected whole counts as one), else None."""
        units = self.turns + self.records_rejected
        if not self.rejected:
            return None
        reason, n = max(sorted(self.rejected.items()), key=lambda kv: kv[1])
        if n * 2 <= units:
            return None
        roles = ", ".join(f"{r} {c}" for r, c in sorted(self.unknown_roles.items(), key=lambda kv: -kv[1]))
        extra = f" (unknown roles: {roles})" if reason == "bad_role" and roles else ""
        return f"{n} of {units} turns and records rejected as {reason}{extra}"


_COUNT_FIELDS = ("records_read", "records_rejected", "records_with_samples", "records_without_samples", "turns",
                 "samples_written", "turns_rejected", "coerced", "masked")


@dataclass
class InputInfo:
    """One input file: where, what, and its counts."""

    path: str
    sha256: str
    bytes: int
    container: str
    format: str
    counts: Counts = field(default_factory=Counts)
    duplicate_of: str | None = None  # an earlier input with the same content: not read again

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = {"path": self.path, "sha256": self.sha256, "bytes": self.bytes, "container": self.container,
               "format": self.format, "counts": self.counts.to_dict()}
        if self.duplicate_of is not None:
            out["duplicate_of"] = self.duplicate_of
        return out


@dataclass
class Manifest:
    """The record of one ``prepare`` run, written to ``manifest.json``."""

    options: dict[str, Any]
    inputs: list[InputInfo]
    splits: dict[str, int]
    # one line each: a file where one reason rejected most turns, an old output left behind
    warnings: list[str] = field(default_factory=list)

    @property
    def sources(self) -> dict[str, Counts]:
        """Counts summed per source (layout), in order of first appearance (duplicates left out)."""
        out: dict[str, Counts] = {}
        for info in self.inputs:
            if info.duplicate_of is None:
                out.setdefault(info.format, Counts()).add(info.counts)
        return out

    @property
    def totals(self) -> Counts:
        """Counts over all inputs."""
        total = Counts()
        for info in self.inputs:
            total.add(info.counts)
        return total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the content of manifest.json)."""
        return {
            "restlit_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "options": self.options,
            "inputs": [i.to_dict() for i in self.inputs],
            "sources": {k: v.to_dict() for k, v in self.sources.items()},
            "totals": self.totals.to_dict(),
            "splits": self.splits,
            "duplicate_inputs": sum(1 for i in self.inputs if i.duplicate_of is not None),
            "warnings": self.warnings,
        }
