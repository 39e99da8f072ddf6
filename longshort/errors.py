"""The one base class of user mistakes, so every command reports them the same way.

A ``UserError`` is a mistake the user can fix (a config value, a data file, a model path, a name): the
commands print its message, which says what is wrong and how to fix it, as one line and exit with
status 2. Any other exception is a bug and keeps its traceback. ``--debug`` shows the traceback of a
user error too. Each module's error class (``ConfigError``, ``DataError``, ``ModelNotFoundError``...)
derives from this one and from the builtin it always was (``ValueError``, ``KeyError``, ``OSError``),
so existing ``except`` clauses keep working.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for; its message is one line that says how to fix it."""
