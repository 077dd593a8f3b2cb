"""User mistakes end in one clear line on stderr and exit code 2, never a traceback.

Every user-facing error derives from :class:`restlit.errors.UserError`; ``cli/main.py`` registers
each command through :func:`one_line`, the one place that turns such an error into ``fail``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from restlit.errors import UserError


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(2)


def one_line(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with every :class:`UserError` it raises turned into :func:`fail` (typer reads the
    wrapped signature, so options stay as declared)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            fail(str(exc))

    return run


__all__ = ["UserError", "fail", "one_line"]
