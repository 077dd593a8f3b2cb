"""MkDocs hooks: the generated reference pages and the repository files the site shows.

``mkdocs build`` is all it takes: this module (``hooks:`` in mkdocs.yml) adds to the site

- ``reference/config.md``: every key of a run configuration, generated from the config dataclasses
  (:mod:`restlit.config.sections`, :mod:`restlit.config.method`, and :class:`restlit.rewards.RewardConfig`): each field's type,
  default and the one-line docstring written on the line after it in the source;
- ``reference/cli.md``: every ``restlit`` command, argument and option, walked from the typer app's
  click command tree;
- ``benchmarks/RESULTS.md`` and the figures under ``benchmarks/`` (rendered from where they live, not
  copied into docs/).

The generators are plain functions (``config_reference``, ``cli_reference``, ``field_docs``) that the
tests call too.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The checkout being documented comes first, whatever restlit the environment has installed.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Repository files the site renders or links, as (pattern under the repository, page or asset).
REPO_FILES = ("benchmarks/RESULTS.md", "benchmarks/demo/*.png", "benchmarks/ablation/*.png")


# ------------------------------------------------------------------------------------------------
# Field docstrings (litgpt's args.py style: a string literal on the line after the field)
# ------------------------------------------------------------------------------------------------


def field_docs(source: str) -> dict[str, dict[str, str | None]]:
    """Per dataclass in ``source``: each annotated field's one-line docstring (``None`` when absent).

    A field's docstring is the string literal statement right after its annotated assignment."""
    out: dict[str, dict[str, str | None]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef) or not any(_is_dataclass(d) for d in node.decorator_list):
            continue
        docs: dict[str, str | None] = {}
        body = node.body
        for i, stmt in enumerate(body):
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                nxt = body[i + 1] if i + 1 < len(body) else None
                is_doc = (isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                          and isinstance(nxt.value.value, str))
                docs[stmt.target.id] = " ".join(nxt.value.value.split()) if is_doc else None
        out[node.name] = docs
    return out


def _is_dataclass(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return (isinstance(target, ast.Name) and target.id == "dataclass") or (
        isinstance(target, ast.Attribute) and target.attr == "dataclass")


def _annotations(cls: type) -> dict[str, str]:
    """The fields' annotations as written in the source (``from __future__ import annotations``)."""
    out = {}
    for klass in reversed(cls.__mro__):
        out.update({k: str(v) for k, v in getattr(klass, "__annotations__", {}).items()})
    return out


def _prose(doc: str | None) -> str:
    """A reStructuredText-flavoured docstring as Markdown: ``x`` and :role:`x` become `x`."""
    text = inspect.cleandoc(doc or "")
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`").replace("::\n", ":\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _yaml(value: Any) -> str:
    if value is dataclasses.MISSING:
        return "(required)"
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value) if value is not None else "null"


def config_reference() -> str:
    """The configuration reference page: one section per YAML section of :class:`RunConfig`."""
    from restlit.config import method, sections

    docs: dict[str, dict[str, str | None]] = {}
    for module in {sections, method, sys.modules[sections.RewardConfig.__module__]}:
        docs.update(field_docs(inspect.getsource(module)))
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config dataclasses (`restlit/config/sections.py`, `restlit/config/method.py`, `RewardConfig` in",
        "`restlit/rewards.py`): each key's type, default and the one-line docstring under its field.",
        "A run config is YAML; any key can also be set on the command line with",
        "`--set section.key=VALUE` (e.g. `--set objective.weights.mode=uniform`). A wrong key or value",
        "fails at load with one line naming the key. The shipped configs are in `configs/`.",
        "",
    ]
    top = [f for f in dataclasses.fields(sections.RunConfig)]
    scalars = [f for f in top if not dataclasses.is_dataclass(_default(f))]
    for f in top:
        value = _default(f)
        if dataclasses.is_dataclass(value):
            lines += _section(f.name, value, docs, level=2)
    if scalars:
        lines += ["## Top level", "", "| key | type | default | description |", "|---|---|---|---|"]
        run_docs = docs.get("RunConfig", {})
        for f in scalars:
            lines.append(f"| `{f.name}` | `{_cell(_annotations(sections.RunConfig)[f.name])}` | "
                         f"`{_cell(_yaml(_default(f)))}` | {_cell(run_docs.get(f.name) or '')} |")
        lines.append("")
    return "\n".join(lines)


def _section(key: str, instance: Any, docs: dict, level: int) -> list[str]:
    """A section's table, then its nested sections; defaults are those of ``instance`` (the
    section's default value, so that e.g. each reward ramp shows its own)."""
    cls = type(instance)
    lines = [f"{'#' * level} `{key}`", "", _prose(cls.__doc__), "",
             "| key | type | default | description |", "|---|---|---|---|"]
    nested = []
    annotations = _annotations(cls)
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        doc = docs.get(cls.__name__, {}).get(f.name) or ""
        if dataclasses.is_dataclass(value):
            nested.append((f"{key}.{f.name}", value))
            shown = f"see [`{key}.{f.name}`](#{_anchor(key + '.' + f.name)})"
        else:
            shown = f"`{_cell(_yaml(value))}`"
        lines.append(f"| `{f.name}` | `{_cell(annotations[f.name])}` | {shown} | {_cell(doc)} |")
    lines.append("")
    for sub, sub_value in nested:
        lines += _section(sub, sub_value, docs, level=min(level + 1, 4))
    return lines


def _anchor(title: str) -> str:
    """The id MkDocs' toc extension gives a heading ``\\`title\\```."""
    return re.sub(r"[^\w\- ]", "", title).strip().lower().replace(" ", "-")


# ------------------------------------------------------------------------------------------------
# The CLI reference, from the click command tree of the typer app
# ------------------------------------------------------------------------------------------------


def cli_commands():
    """``(path, click command, context)`` for the root and every sub-command, depth first, in the
    order ``restlit --help`` lists them."""
    import typer.main

    from restlit.cli.main import app

    root = typer.main.get_command(app)  # typer's own (vendored) click classes: duck-typed below
    out = []

    def walk(cmd, path: list[str], parent) -> None:
        ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent)
        out.append((path, cmd, ctx))
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name], ctx)

    walk(root, ["restlit"], None)
    return out


def cli_reference() -> str:
    lines = [
        "# Command-line reference",
        "",
        "Generated from the `restlit` typer app (`restlit/cli/main.py`): every command with its",
        "arguments and options, as `restlit COMMAND --help` prints them. A user mistake ends in one line",
        "on stderr and exit status 2.",
        "",
    ]
    for path, cmd, ctx in cli_commands():
        if cmd.hidden:
            continue
        lines += [f"## `{' '.join(path)}`", "", _prose(cmd.help or ""), "", "```", cmd.get_usage(ctx).strip(), "```", ""]
        if hasattr(cmd, "list_commands"):
            subs = [f"- [`{' '.join([*path, n])}`](#{_anchor(' '.join([*path, n]))}): "
                    f"{cmd.get_command(ctx, n).get_short_help_str(100)}" for n in cmd.list_commands(ctx)]
            lines += [*subs, ""]
        params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False)]
        if not params:
            continue
        lines += ["| argument or option | description |", "|---|---|"]
        for p in params:
            # click's own help record: the names with their type, and the help with its default
            record = p.get_help_record(ctx)
            names, text = record if record else (p.name.upper(), getattr(p, "help", None) or "")
            if p.param_type_name == "argument" and not record:
                names = f"{p.name.upper()} (argument)"
            lines.append(f"| `{_cell(names)}` | {_cell(text)} |")
        lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# MkDocs hooks
# ------------------------------------------------------------------------------------------------


def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, "reference/config.md", content=config_reference()))
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    for pattern in REPO_FILES:
        for path in sorted(REPO.glob(pattern)):
            files.append(File.generated(config, path.relative_to(REPO).as_posix(), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    """Table cells written for GitHub escape a pipe inside code (`a \\| b`); Python-Markdown keeps
    such pipes inside code spans unescaped and would show the backslash."""
    return "\n".join(
        re.sub(r"`[^`\n]*`", lambda m: m.group(0).replace("\\|", "|"), line) if line.lstrip().startswith("|") else line
        for line in markdown.split("\n")
    )


def on_page_content(html, page, config, files):
    """Docstrings cross-reference in reStructuredText roles (:func:`name`): drop the role, keep the code."""
    html = re.sub(r":(?:mod|class|func|meth|attr|data|obj|exc):(?=<code)", "", html)
    return re.sub(r"::</p>", ":</p>", html)
