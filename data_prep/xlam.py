"""xLAM-60k's raw layout: ``{"id", "query", "tools", "answers"}``.

``tools`` and ``answers`` are JSON *strings* (lists are accepted too); tool parameters are flat
``{name: {"type": "int, optional", "description", "default"}}`` dicts; answers are
``[{"name", "arguments"}]``. One record is one single-turn sample with an empty ``think``. An
empty answer list means "no tool applies": the target then gets restlit's fixed refusal
response (``restlit.prompts.NO_CALL_RESPONSE``) and a ``no_call_response_added`` warning.
"""

from __future__ import annotations

from typing import Any

from restlit.data_prep.records import (
    RecordError,
    Target,
    Trace,
    Turn,
    calls_from_data,
    require,
    tools_or_reject,
)
from restlit.data_prep.schema import normalize_tools, tools_from_json
from restlit.prompts import NO_CALL_RESPONSE

SOURCE = "xlam"


def matches(record: Any) -> bool:
    """True when the record has xLAM's keys."""
    return isinstance(record, dict) and {"query", "tools", "answers"} <= record.keys()


def _tools(value: Any) -> tuple[list[dict], tuple[str, ...], str | None]:
    if isinstance(value, str):
        return tools_from_json(value)
    tools, warnings = normalize_tools(value)
    return tools, warnings, None


def target_from_calls(calls: list[dict], warnings: tuple[str, ...]) -> tuple[Target, tuple[str, ...]]:
    """A single-turn call target; an empty call list becomes the fixed refusal response."""
    if calls:
        return Target("", calls, None), warnings
    return Target("", [], NO_CALL_RESPONSE), warnings + ("no_call_response_added",)


def read(record: Any) -> Trace:
    """One xLAM record -> a Trace of [user, assistant]; RecordError when unusable."""
    query = require(record, "query")
    tools, warnings, tools_json = tools_or_reject(_tools, require(record, "tools", (str, list)))
    answers = require(record, "answers", (str, list))
    try:
        target, warnings = target_from_calls(calls_from_data(answers, "'answers'"), warnings)
        assistant = Turn("assistant", target=target)
    except RecordError as exc:
        assistant = Turn("assistant", error=exc)
    return Trace(tools, [Turn("user", content=query.strip()), assistant], warnings, tools_json)
