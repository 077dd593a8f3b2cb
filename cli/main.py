"""The ``restlit`` command: one typer app, one module per sub-command.

Each sub-command module defines a plain function with typed arguments; this file only registers
them, so ``restlit --help`` stays fast (heavy imports happen inside the commands).
"""

from __future__ import annotations

import typer

from restlit.cli import ablate as _ablate
from restlit.cli import demo as _demo
from restlit.cli import diagnose as _diagnose
from restlit.cli import eval as _eval
from restlit.cli import fit as _fit
from restlit.cli import prepare as _prepare
from restlit.cli import report as _report
from restlit.cli import tag as _tag
from restlit.cli.errors import one_line
from restlit.runtime.quiet import quiet

quiet()  # third-party notices restlit knows to be harmless; RESTLIT_VERBOSE=1 shows them

app = typer.Typer(
    name="restlit",
    help="ResT post-training of tool-using LLMs: prepare, sft, fit, eval, tag, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _print_version(value: bool) -> None:
    if value:
        from restlit import __version__

        print(f"restlit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
    ),
) -> None:
    """ResT post-training of tool-using LLMs: prepare, sft, fit, eval, tag, report."""


# in the order a user meets them
app.command("prepare")(one_line(_prepare.prepare))
app.command("sft")(one_line(_fit.sft))
app.command("fit")(one_line(_fit.fit))
app.command("eval")(one_line(_eval.eval_command))
app.command("tag")(one_line(_tag.tag))
app.command("report")(one_line(_report.report))
app.command("demo")(one_line(_demo.demo))
app.command("ablate")(one_line(_ablate.ablate))
app.add_typer(_diagnose.app, name="diagnose")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
