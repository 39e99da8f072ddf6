"""Lenient JSON for LLM output: the chunker's answers are JSON-like, rarely JSON.

The upstream chunker parsed with ``demjson`` (Python-2 era). What models actually return, and what
this accepts: a ```` ```json ```` fence around the object, prose before it, single-quoted strings
(the prompt's own skeleton uses them), trailing or missing commas, unquoted keys and words (with
inner spaces: ``block type: problem understanding``), Python literals (``True``, ``None``), and
``//`` / ``#`` comments. Strict ``json.loads`` runs first; the small recursive-descent parser below
only handles what it rejects. Parsing starts at the first ``{`` (or ``[``) and ignores whatever
follows the value it opens.
"""
from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```[a-zA-Z]*")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[^\s,:{}\[\]'\"](?:[^,:{}\[\]'\"\n]*[^\s,:{}\[\]'\"])?")  # may hold inner spaces
_LITERALS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
# No \b or \f: in model output a backslash before b or f is LaTeX (\frac, \beta), not a control code.
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "/": "/", "\\": "\\", '"': '"', "'": "'"}


class LenientJSONError(ValueError):
    """Nothing JSON-like could be read; says where parsing stopped."""


def loads(text: str) -> Any:
    """The first JSON-like object or array in ``text``."""
    body = _FENCE.sub("", text).strip()
    try:
        return json.loads(body)
    except ValueError:
        pass
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    if not starts:
        raise LenientJSONError(f"no '{{' or '[' in the text: {text[:80]!r}")
    return _Parser(body, min(starts)).value()


class _Parser:
    def __init__(self, text: str, pos: int):
        self.text, self.pos = text, pos

    def error(self, what: str) -> LenientJSONError:
        return LenientJSONError(f"{what} at character {self.pos}: {self.text[self.pos:self.pos + 40]!r}")

    def skip(self) -> None:
        """Skip whitespace and comments."""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char.isspace():
                self.pos += 1
            elif char == "#" or self.text.startswith("//", self.pos):
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def value(self) -> Any:
        char = self.peek()
        if char == "{":
            return self.container("}", is_object=True)
        if char == "[":
            return self.container("]", is_object=False)
        if char in "'\"":
            return self.string()
        if not char:
            raise self.error("unexpected end")
        return self.scalar()

    def container(self, close: str, *, is_object: bool) -> Any:
        self.pos += 1
        items: Any = {} if is_object else []
        while True:
            char = self.peek()
            if char == close:
                self.pos += 1
                return items
            if not char:
                raise self.error(f"missing '{close}'")
            if char == ",":  # trailing, doubled or leading commas are noise
                self.pos += 1
                continue
            if is_object:
                key = self.value()
                if self.peek() != ":":
                    raise self.error("expected ':' after a key")
                self.pos += 1
                items[str(key)] = self.value()
            else:
                items.append(self.value())

    def string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(out)
            if char == "\\" and self.pos + 1 < len(self.text):
                nxt = self.text[self.pos + 1]
                if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", self.text[self.pos + 2:self.pos + 6]):
                    out.append(chr(int(self.text[self.pos + 2:self.pos + 6], 16)))
                    self.pos += 6
                    continue
                out.append(_ESCAPES.get(nxt, "\\" + nxt))  # an unknown escape (LaTeX) stays as written
                self.pos += 2
                continue
            out.append(char)
            self.pos += 1
        raise self.error("unterminated string")

    def scalar(self) -> Any:
        match = _WORD.match(self.text, self.pos)
        if match is None:
            raise self.error("unexpected character")
        self.pos = match.end()
        word = match.group()
        if word in _LITERALS:
            return _LITERALS[word]
        if _NUMBER.fullmatch(word):
            number = float(word)
            return int(number) if number.is_integer() and not re.search(r"[.eE]", word) else number
        return word
