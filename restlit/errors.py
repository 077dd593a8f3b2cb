"""The one base class of every error a user can fix: a file, a flag, a config value, an output.

Library modules raise subclasses of :class:`UserError` (``ConfigError``, ``DataError``,
``ModelNotFound``, ``InputError``, ``EvalError``, ``ReportError``, ``OutputError``); their message is
one line that names what is wrong. The command line catches ``UserError`` once (``cli/main.py``)
and prints ``error: <message>`` with exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; ``str(exc)`` is one line for the user."""


__all__ = ["UserError"]
