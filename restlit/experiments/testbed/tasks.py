"""Synthetic tool-use tasks whose answer follows from the request, with a think part of controllable
length that carries no information about it.

Five tools with one to three typed parameters each (strings copied verbatim from the request,
small integers, enums); every request is a template filled with the values, so the right tool and
every argument can be read off the request. The reference answer is ``<think> FILLER </think>``
followed by the call, where FILLER is ``L`` words drawn uniformly (with replacement) from a list of
reasoning-like words that names no tool and no value, independently of the request: the think part
is pure haystack, high-entropy under any policy that has learnt the task.

:func:`write_tasks` writes the OpenAI chat layout (``{"messages", "tools"}`` records, one per
line) that ``restlit prepare`` reads unchanged. Every request occurs once, so however ``prepare``
splits the records into train and validation, the two share no request.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Rome", "Quito"]
UNITS = ["celsius", "fahrenheit"]
LABELS = ["gym", "work", "meds", "school", "lunch", "train"]
CURRENCIES = ["USD", "EUR", "JPY", "GBP", "CHF"]
AMOUNTS = [5, 10, 20, 50, 100, 200, 500]
CONTACTS = ["Ana", "Ben", "Carla", "Dev", "Emma", "Femi", "Gus", "Hana"]
TEXTS = ["running late", "call me back", "see you soon", "on my way", "happy birthday", "thanks a lot"]
GENRES = ["jazz", "rock", "pop", "blues", "salsa", "techno"]

FILLER = ["so", "let", "us", "view", "what", "is", "being", "asked", "here", "first", "hmm", "okay", "maybe", "now",
          "then", "wait", "right", "good", "well", "think", "about", "it", "again", "carefully", "step", "by",
          "fine", "sure", "yes", "check", "once", "more", "because", "I", "should", "look", "at", "this", "and",
          "that", "before", "answering", "quickly", "slowly", "probably", "actually"]


def _tool(name: str, description: str, params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": params, "required": list(params)}}}


TOOLS = [
    _tool("get_weather", "Current weather in a city.",
          {"city": {"type": "string"}, "unit": {"type": "string", "enum": UNITS}}),
    _tool("set_alarm", "Set an alarm at an hour of the day.",
          {"hour": {"type": "integer"}, "label": {"type": "string"}}),
    _tool("convert_currency", "Convert an amount between currencies.",
          {"amount": {"type": "integer"}, "source": {"type": "string", "enum": CURRENCIES},
           "target": {"type": "string", "enum": CURRENCIES}}),
    _tool("send_message", "Send a text message to a contact.",
          {"contact": {"type": "string"}, "text": {"type": "string"}}),
    _tool("play_music", "Play music of a genre at a volume from 1 to 10.",
          {"genre": {"type": "string", "enum": GENRES}, "volume": {"type": "integer"}}),
]

# (tool, request templates, the value sets the templates' fields range over)
_FAMILIES: list[tuple[str, list[str], dict[str, list[Any]]]] = [
    ("get_weather", ["What is the weather in {city} in {unit}?", "Tell me the {unit} temperature in {city}.",
                     "How warm is it in {city}? Answer in {unit}."],
     {"city": CITIES, "unit": UNITS}),
    ("set_alarm", ["Set an alarm for {hour} o'clock called {label}.", "Wake me at hour {hour} for {label}.",
                   "Alarm {label} at {hour} please."],
     {"hour": list(range(24)), "label": LABELS}),
    ("convert_currency", ["Convert {amount} {source} to {target}.", "How much is {amount} {source} in {target}?"],
     {"amount": AMOUNTS, "source": CURRENCIES, "target": CURRENCIES}),
    ("send_message", ["Text {contact}: {text}", "Send {contact} the message {text}.",
                      "Tell {contact} that I said {text}."],
     {"contact": CONTACTS, "text": TEXTS}),
    ("play_music", ["Play some {genre} at volume {volume}.", "Put on {genre} music, volume {volume}.",
                    "I want {genre} with the volume at {volume}."],
     {"genre": GENRES, "volume": list(range(1, 11))}),
]


def all_requests() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every ``(request, tool, arguments)`` the templates can make, in a fixed order; a currency is
    never converted to itself. Each request text occurs once."""
    for tool, templates, values in _FAMILIES:
        keys = list(values)
        for combo in itertools.product(*(values[k] for k in keys)):
            args = dict(zip(keys, combo))
            if tool == "convert_currency" and args["source"] == args["target"]:
                continue
            for template in templates:
                yield template.format(**args), tool, args


def filler(words: int, rng: random.Random) -> str:
    """``words`` reasoning-like words, uniform with replacement: no information about any answer."""
    return " ".join(rng.choice(FILLER) for _ in range(words))


def record(request: str, tool: str, args: dict[str, Any], think: str) -> dict[str, Any]:
    """One chat-layout record: the user's request and the assistant's think part and call."""
    content = f"<think> {think} </think>" if think else "<think></think>"
    call = {"type": "function", "function": {"name": tool, "arguments": json.dumps(args)}}
    return {"messages": [{"role": "user", "content": request},
                         {"role": "assistant", "content": content, "tool_calls": [call]}], "tools": TOOLS}


def make_records(think_words: int, seed: int = 0, limit: int = 0) -> list[dict[str, Any]]:
    """Every request (shuffled by ``seed``; the first ``limit`` when > 0), each with its own filler of
    ``think_words`` words."""
    if think_words < 0:
        raise ValueError(f"think length must be >= 0, got {think_words}")
    rng = random.Random(seed)
    items = list(all_requests())
    rng.shuffle(items)
    if limit > 0:
        items = items[:limit]
    return [record(req, tool, args, filler(think_words, rng)) for req, tool, args in items]


def write_tasks(path: str | Path, think_words: int, seed: int = 0, limit: int = 0) -> Path:
    """Write :func:`make_records` as JSON lines to ``path`` (refuses to overwrite); returns it."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for rec in make_records(think_words, seed, limit):
            f.write(json.dumps(rec) + "\n")
    return path


__all__ = ["FILLER", "TOOLS", "all_requests", "filler", "make_records", "record", "write_tasks"]
