"""One sample per assistant turn: the turn is the target, every earlier turn is its history.

A trace with k sample turns gives k items, in order; the history of turn i holds the user
messages, earlier assistant turns (rendered in the canonical format) and tool observations
before it. Failed turns come out as items with an error so the pipeline can reject exactly
that turn:

* an assistant turn whose text did not parse is rejected with its own reason;
* every later turn of the same trace is rejected as ``unparseable_history``: its history would
  have to contain a turn we cannot render;
* a turn with no user message before it is rejected as ``no_user_turn``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from restlit.data_prep.records import RecordError, Target, Trace
from restlit.prompts import render_target


@dataclass
class TurnSample:
    """One assistant turn of a trace, ready to validate and write (or to reject)."""

    turn_index: int  # 0-based position among the assistant turns of the dialogue
    history: list[dict[str, str]]
    target: Target | None
    error: RecordError | None


def decompose(trace: Trace) -> Iterator[TurnSample]:
    """Yield one :class:`TurnSample` per sample turn of ``trace`` (see the module docstring)."""
    history: list[dict[str, str]] = []
    broken_at: int | None = None
    seen_user = False
    assistant_index = 0
    # nothing after the last sample turn is needed (single-turn records: skip rendering it)
    last = max((i for i, t in enumerate(trace.turns) if t.role == "assistant" and t.sample), default=-1)
    for turn in trace.turns[: last + 1]:
        if turn.role != "assistant":
            history.append({"role": turn.role, "content": turn.content})
            seen_user |= turn.role == "user"
            continue
        if turn.sample:
            error = turn.error
            if error is None and broken_at is not None:
                error = RecordError("unparseable_history",
                                    f"assistant turn {broken_at} earlier in the dialogue could not be parsed")
            if error is None and not seen_user:
                error = RecordError("no_user_turn", "no user message before this assistant turn")
            yield TurnSample(assistant_index, list(history), None if error else turn.target, error)
        if turn.error is not None or turn.target is None:
            if broken_at is None:
                broken_at = assistant_index
        else:
            t = turn.target
            history.append({"role": "assistant", "content": render_target(t.think, t.calls, t.response)})
        assistant_index += 1
