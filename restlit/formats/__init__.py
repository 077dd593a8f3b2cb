"""Output formats: what the model writes, and everything that depends on it.

A :class:`Format` owns how tools are shown in the prompt, how a reference answer is rendered from
a prepared (structured) sample, which strings are FORMAT tags, how calls are parsed out of a
completion, how its text is tagged into regions, and what is well-formed for the format reward.
Training, rewards, evaluation and export ask the run's format (``data.tool_format``); nothing else
branches on it. See docs/formats.md.

========== ============================================================ ====================
name       what the model writes                                        vLLM parser
========== ============================================================ ====================
toolrl     ``<think>``, ``<tool_call>`` JSON lines, ``<response>``          none (the default)
hermes     optional ``<think>``, text, ``<tool_call>`` JSON per call       ``hermes``
llama3_json ``{"name", "parameters"}`` objects joined by ``;``           ``llama3_json``
pythonic   ``[f(a=1), g()]``                                            ``pythonic``
========== ============================================================ ====================

Standard library only (no torch): ``import restlit.formats`` is as light as ``restlit.regions``.
"""

from __future__ import annotations

from typing import Any

from restlit.errors import UserError
from restlit.formats.base import FORMAT_KEY, TOOLS_KEY, Format, openai_tools, template_takes_tools
from restlit.formats.hermes import HermesFormat
from restlit.formats.llama3_json import Llama3JsonFormat
from restlit.formats.pythonic import PythonicFormat
from restlit.formats.toolrl import ToolRLFormat

__all__ = ["DEFAULT_FORMAT", "FORMATS", "FORMAT_KEY", "TOOLS_KEY", "Format", "UnknownFormat", "get_format",
           "openai_tools", "prompt_ids", "template_takes_tools"]

FORMATS: dict[str, Format] = {f.name: f for f in (ToolRLFormat(), HermesFormat(), Llama3JsonFormat(),
                                                   PythonicFormat())}
DEFAULT_FORMAT = "toolrl"


class UnknownFormat(UserError, ValueError):
    """An output format name that is not one of :data:`FORMATS`."""


def get_format(name: str | Format | None = None) -> Format:
    """The format called ``name`` (None: the default, ``toolrl``; a :class:`Format` is returned as is)."""
    if isinstance(name, Format):
        return name
    try:
        return FORMATS[name or DEFAULT_FORMAT]
    except KeyError:
        raise UnknownFormat(f"unknown output format {name!r}; choose one of: {', '.join(FORMATS)}") from None


def prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The prompt token ids of ``messages`` built by any format's :meth:`Format.messages`: the
    format named in the first message (:data:`FORMAT_KEY`), ToolRL's when none is."""
    name = messages[0].get(FORMAT_KEY) if messages else None
    return get_format(name).prompt_ids(tokenizer, messages)
