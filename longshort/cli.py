"""Command-line parsing shared by ``python -m longshort.train`` and ``python -m longshort.evaluate``.

Arguments are Hydra-style: ``recipe=NAME`` (or a path to a YAML file), then any number of
``key=value`` overrides, plus a few ``--flags``. User mistakes (``longshort.errors.UserError``: a config
value, a data file, a model path, a name; and a file that does not exist) are one line on stderr and
exit status 2, whether found when the config loads or later in a run; ``--debug`` shows their traceback.
Any other exception is a bug and keeps its traceback.

This module imports no torch or transformers: ``--help``, ``--help-config``, ``--print-config`` and a
config error answer in a fraction of a second (``tests/test_cli.py`` guards it).
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Callable

from longshort.config import Config, ConfigError, describe_schema, list_recipes, load_config, to_yaml
from longshort.errors import UserError

USER_ERRORS = (UserError, FileNotFoundError)
DEBUG_FLAG = {"--debug": "show the traceback of a user error (without it: one line, exit status 2)"}


@dataclass
class Invocation:
    recipe: str | None
    overrides: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)


def parse(argv: list[str], flags: dict[str, str]) -> Invocation:
    """Split argv into the recipe, the overrides and the known ``--flags`` (name -> help)."""
    invocation = Invocation(recipe=None)
    for arg in argv:
        if arg.startswith("--"):
            if arg not in flags:
                raise ConfigError(f"unknown flag '{arg}'; flags: {', '.join(sorted(flags))}")
            invocation.flags.add(arg)
        elif arg.startswith("recipe="):
            invocation.recipe = arg.split("=", 1)[1]
        else:
            invocation.overrides.append(arg)
    return invocation


def usage(prog: str, flags: dict[str, str]) -> str:
    lines = [f"usage: python -m {prog} recipe=NAME|PATH [key=value ...] [flags]",
             f"recipes: {', '.join(list_recipes())}", "flags:"]
    lines += [f"  {name:16s} {text}" for name, text in sorted(flags.items())]
    lines.append("  -h, --help       this message")
    return "\n".join(lines)


def load(prog: str, argv: list[str] | None, flags: dict[str, str]) -> tuple[Config, Invocation]:
    """Parse argv and resolve the config; handles --help, --help-config and --print-config itself.

    Exits with status 0 after a help or print flag and with status 2 on a config error.
    """
    argv = sys.argv[1:] if argv is None else argv
    flags = {**flags, **DEBUG_FLAG, "--help-config": "list every config key with its type and documentation",
             "--print-config": "print the resolved config and exit"}
    if "-h" in argv or "--help" in argv:
        print(usage(prog, flags))
        raise SystemExit(0)
    try:
        invocation = parse(argv, flags)
        if "--help-config" in invocation.flags:
            print(describe_schema())
            raise SystemExit(0)
        if invocation.recipe is None:
            raise ConfigError(f"no recipe given: add recipe=NAME (one of {', '.join(list_recipes())}) or recipe=PATH")
        config = load_config(invocation.recipe, invocation.overrides)
    except USER_ERRORS as err:
        if "--debug" in argv:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    if "--print-config" in invocation.flags:
        print(to_yaml(config), end="")
        raise SystemExit(0)
    show_progress_messages()
    return config, invocation


def one_line(err: BaseException) -> str:
    """An error's message on one line (a wrapped library message can hold newlines)."""
    return " ".join(str(err).split()) or type(err).__name__


def guarded(body: Callable[[], int], invocation: Invocation) -> int:
    """Run a command's body: a user error becomes one line on stderr and exit status 2 (``--debug``:
    the traceback); anything else propagates as the bug it is."""
    try:
        return body()
    except USER_ERRORS as err:
        if "--debug" in invocation.flags:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when a message comes.

    A plain ``StreamHandler(sys.stderr)`` keeps the stream of the moment it was made; once a notebook
    cell or a test's capture replaces and closes that stream, every later message fails."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def show_progress_messages() -> None:
    """Send longshort's own INFO messages (resumed checkpoints, skipped data rows) to stderr, once.

    Only the ``longshort`` logger: third-party libraries keep their own levels."""
    log = logging.getLogger("longshort")
    if not log.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
