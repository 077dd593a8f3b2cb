"""The output format recorded with an exported model (``final/``): the format's chat template
written into the tokenizer when the tokenizer's own takes no tools (so ``vllm serve final/``
renders tools the way the model was trained), and ``restlit.json`` naming the format (so
``restlit eval`` prompts and parses in it by default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from restlit.formats import Format, get_format

__all__ = ["RECORD", "recorded_format", "save_format"]

RECORD = "restlit.json"


def save_format(directory: str | Path, tokenizer: Any, fmt: Format | str) -> None:
    """Record ``fmt`` in ``directory`` (a ``save_pretrained`` output holding ``tokenizer``)."""
    fmt = get_format(fmt)
    directory = Path(directory)
    template = fmt.template_for(tokenizer)
    if template is not None:
        original = tokenizer.chat_template
        tokenizer.chat_template = template
        try:
            tokenizer.save_pretrained(directory)
        finally:
            tokenizer.chat_template = original
    record = {"tool_format": fmt.name, "vllm_tool_call_parser": fmt.vllm_parser}
    (directory / RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def recorded_format(model: str | Path) -> str | None:
    """The format recorded with an exported model directory, or None (no record, or not a directory)."""
    path = Path(model) / RECORD
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("tool_format")
    except (OSError, ValueError, AttributeError):
        return None
