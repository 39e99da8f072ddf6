"""Reading JSONL as the ecosystem's readers do, with errors that name the file and the line.

One reader for the JSONL files a user hands in (data sets, cold-start transcripts), so they all accept
what ``datasets`` and pandas accept: a UTF-8 byte-order mark (several Windows tools write one), CRLF
line ends and blank lines. What cannot be read (a byte that is not UTF-8, a line that is not JSON) is a
``JsonlError`` naming ``path:line`` and what to do, never a ``UnicodeDecodeError`` traceback.

The logs a run appends to (``metrics.jsonl``, the SFT ``log.jsonl``) are read with ``complete_lines``:
a kill in the middle of an append leaves a last line without its newline, which is dropped rather
than trusted (``longshort.paths.append_line``), and ``trim_log`` rewrites such a log, atomically, up to
the step a resumed run restarts from.
"""
from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Iterator

from longshort.errors import UserError
from longshort.paths import not_utf8_message, write_text_atomically

ONE_OBJECT_PER_LINE = "each line must be one complete JSON object"


class JsonlError(UserError, ValueError):
    """A JSONL file that cannot be read; the message names the file and line and says how to fix it."""


def read_jsonl(path: str | Path, *, hint: str = ONE_OBJECT_PER_LINE) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for every non-blank line; ``hint`` ends an invalid-JSON message."""
    path = Path(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise JsonlError(not_utf8_message(path, number, raw, err)) from None
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as err:
                raise JsonlError(f"{path}:{number}: invalid JSON ({err.msg} at column {err.colno}); {hint}") from None


def complete_lines(path: str | Path) -> list[str]:
    """The non-blank lines of an appended log, without a torn last line (one a kill cut before its newline)."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    return [line for line in lines[:-1] if line.strip()]  # the piece after the last newline is torn or empty


def read_log(path: str | Path) -> list[dict]:
    """The complete records of an appended JSONL log (``complete_lines``, parsed)."""
    return [json.loads(line) for line in complete_lines(path)]


def trim_log(path: str | Path, step: int) -> None:
    """Keep the log's complete records up to ``step``: the steps a resumed run redoes are logged again,
    not twice, and a torn last line goes. Rewritten atomically, so a kill leaves the old log or the new."""
    path = Path(path)
    if not path.is_file():
        return
    kept = [line for line in complete_lines(path) if json.loads(line)["step"] <= step]
    write_text_atomically(path, "".join(line + "\n" for line in kept))
