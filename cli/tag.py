"""``restlit tag``: show the regions of a completion in an output format, and optionally of its
tokens; ``--json`` prints the spans and the parsed calls for scripts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from restlit.cli.errors import fail

STYLES = {
    "FORMAT": "bold magenta",
    "THINK": "dim",
    "TOOL_NAME": "bold black on yellow",
    "PARAM_NAME": "bold cyan",
    "PARAM_VALUE": "green",
    "RESPONSE": "blue",
    "OTHER": "",
}


def tag(
    text: str | None = typer.Argument(None, help="Text to tag; omit to read --file or stdin."),
    file: Path | None = typer.Option(None, "--file", "-f", help="Read the text from this file."),
    tokenizer: str | None = typer.Option(
        None, "--tokenizer", help="Tokenizer directory or model alias (e.g. smollm2-135m): adds a per-token table."
    ),
    tool_format: str = typer.Option(
        "toolrl", "--format", help="Output format of the text: toolrl, hermes, llama3_json or pythonic."),
    as_json: bool = typer.Option(
        False, "--json", help='Print {"format", "spans": [{"start", "end", "region", "text"}], "calls": '
                              '[{"name", "arguments"}]} as JSON instead of colours.'),
) -> None:
    """Print TEXT coloured by region (format, think, tool name, parameter name/value, response)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from restlit.formats import UnknownFormat, get_format
    from restlit.regions import Region, token_regions

    try:
        fmt = get_format(tool_format)
    except UnknownFormat as exc:
        fail(str(exc))

    if text is not None and file is not None:
        fail("give either a TEXT argument or --file, not both")
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{file}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}")
    elif text is None:
        if sys.stdin.isatty():
            fail("no text: pass TEXT, --file FILE, or pipe text on stdin")
        text = sys.stdin.read()
    text = text.replace("\\n", "\n") if "\n" not in text else text

    spans = fmt.tag(text)
    if as_json:
        payload = {"format": fmt.name,
                   "spans": [{"start": a, "end": b, "region": r.name, "text": text[a:b]} for a, b, r in spans],
                   "calls": fmt.parse(text)}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    console = Console(highlight=False)
    out = Text()
    for start, end, region in spans:
        out.append(text[start:end], style=STYLES[region.name])
    console.print(out)
    legend = Text("regions: ")
    for region in Region:
        legend.append(f" {region.name} ", style=STYLES[region.name] or "reverse")
        legend.append(" ")
    console.print(legend)
    counts = {r: 0 for r in Region}
    for start, end, region in spans:
        counts[region] += end - start
    console.print("characters: " + ", ".join(f"{r.name} {n}" for r, n in counts.items() if n))

    if tokenizer is None:
        return
    from restlit.models import load_tokenizer

    tok = load_tokenizer(tokenizer)  # a ModelNotFound is one line (cli/main.py)
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    offsets = enc["offset_mapping"]
    regions = token_regions(text, offsets, spans)
    table = Table(title=f"{len(offsets)} tokens")
    for col in ("#", "token", "chars", "region"):
        table.add_column(col)
    for i, ((a, b), region) in enumerate(zip(offsets, regions)):
        table.add_row(str(i), Text(repr(text[a:b])), f"{a}:{b}", Text(region.name, style=STYLES[region.name]))
    console.print(table)
