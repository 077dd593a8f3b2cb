"""User mistakes end in one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer


class UserError(Exception):
    """An error caused by the user's input (a file, a flag, a config value)."""


def fail(message: str) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(2)
