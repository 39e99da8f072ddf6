"""Step segmentation of a chain of thought, on the tokenizer's ids.

Both methods cut a chain of thought into steps at blank lines (``"\\n\\n"``). The step-entropy paper's
code matched only tokens whose raw BPE string is exactly ``"ĊĊ"``, so a token that merges the blank
line with other characters (``".\\n\\n"``, ``"\\n\\n   "``) never ended a step, and a blank line
spelled as two ``"\\n"`` tokens did not either. Here the ids are decoded incrementally and a step ends
at the token whose decoded text completes a ``"\\n\\n"``, whatever the merge. Steps are token ranges,
so entropies line up with them exactly, and each keeps its exact decoded text including the
delimiter, so joining the step texts gives back the thinking text.

Decisions the papers leave open, made explicit here:
- Only the thinking counts: everything from ``</think>`` on is cut off first.
- A step never consists of whitespace only. Extra blank lines are attached to the step before them
  (as part of its delimiter), because an empty step has no content to score and would otherwise be
  pruned first "for free" (the released code scores empty steps 0.0).
- Steps are kept in a list, never keyed by their text (the released code's dict merged duplicates).
- A cut is postponed while the decoded text ends in a partial UTF-8 character (U+FFFD), so every
  step's text decodes cleanly on its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

DELIMITER = "\n\n"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class Step:
    """One step: tokens ``[start, end)`` of the chain; ``[body_end, end)`` are its whitespace-only
    delimiter tokens. ``delimited`` is False only for a final step that runs into ``</think>``."""

    index: int
    text: str
    start: int
    end: int
    body_end: int
    delimited: bool

    @property
    def num_tokens(self) -> int:
        return self.end - self.start

    @property
    def scored(self) -> range:
        """Token positions whose entropy describes the step: its content, not the blank line after it
        (the released code also leaves the delimiter out). A merged token such as ``".\\n\\n"`` carries
        content, so it is scored."""
        return range(self.start, self.body_end) if self.body_end > self.start else range(self.start, self.end)


class StepSegmenter:
    """Cuts token ids into steps with one tokenizer. Single-token decodes are cached, so segmenting
    thousands of chains with one segmenter decodes each vocabulary entry at most once."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._pieces: dict[int, str] = {}

    def piece(self, token_id: int) -> str:
        if token_id not in self._pieces:
            self._pieces[token_id] = self.tokenizer.decode([token_id])
        return self._pieces[token_id]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def thinking_length(self, ids: Sequence[int]) -> int:
        """How many leading ids come before ``</think>`` (all of them when it never appears).

        The tag may be one added token or several ordinary ones (``"</"``, ``"think"``, ``">"``); it is
        found by decoding a small window at every token whose text holds a ``">"``.
        """
        window = len(THINK_CLOSE.encode()) + 2
        for i, token in enumerate(ids):
            if ">" not in self.piece(token):
                continue
            lo = max(0, i - window)
            if THINK_CLOSE not in self.decode(ids[lo:i + 1]):
                continue
            start = i
            while start > lo and THINK_CLOSE not in self.decode(ids[start:i + 1]):
                start -= 1
            return start
        return len(ids)

    def segment(self, ids: Sequence[int]) -> list[Step]:
        """The steps of the thinking part of ``ids`` (a chain as generated, starting after ``<think>``)."""
        ids = list(ids[: self.thinking_length(ids)])
        cuts: list[int] = []  # end positions of delimited steps
        start, pending = 0, False
        for i, token in enumerate(ids):
            if not (pending or "\n" in self.piece(token)):
                continue
            text = self.decode(ids[start:i + 1])
            if DELIMITER not in (text if cuts else text.lstrip()):  # leading blank lines cut nothing
                continue
            if text.endswith("\ufffd"):
                pending = True  # a partial character: cut once it is complete
                continue
            pending = False
            if not text.strip():  # blank lines only: they belong to the previous step's delimiter
                cuts[-1] = i + 1
            else:
                cuts.append(i + 1)
            start = i + 1
        if start < len(ids) and cuts and not self.decode(ids[start:]).strip():
            cuts[-1] = len(ids)  # trailing whitespace before </think> joins the last step
        bounds = [0, *cuts] + ([len(ids)] if not cuts or cuts[-1] < len(ids) else [])
        steps = []
        for index, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
            body_end = hi
            while body_end > lo and not self.piece(ids[body_end - 1]).strip():
                body_end -= 1
            steps.append(Step(index, self.decode(ids[lo:hi]), lo, hi, body_end, hi in cuts))
        return steps


def thinking_text(response: str) -> tuple[int, str]:
    """(offset, text) of the thinking in a full response: after a leading ``<think>`` (and the one
    newline that follows it), up to ``</think>``. The offset maps step positions back to the response."""
    offset = 0
    stripped = response.lstrip()
    if stripped.startswith(THINK_OPEN):
        offset = len(response) - len(stripped) + len(THINK_OPEN)
        if response[offset:offset + 1] == "\n":
            offset += 1
    end = response.find(THINK_CLOSE, offset)
    return offset, response[offset: end if end >= 0 else len(response)]


def segment_text(text: str, segmenter: StepSegmenter) -> list[Step]:
    """Steps of a thinking text (no ``</think>`` in it), through the tokenizer's ids, so a text gets
    the same cut as a generated chain. Raises ValueError when the tokenizer does not round-trip the
    text, because the step texts must join back to exactly the original."""
    steps = segmenter.segment(segmenter.tokenizer.encode(text, add_special_tokens=False))
    if "".join(step.text for step in steps) != text:
        raise ValueError("the tokenizer does not round-trip this text exactly (or it holds </think>); "
                         "use a byte-level tokenizer and pass the thinking only (thinking_text)")
    return steps


def join_steps(texts: Sequence[str]) -> str:
    """Concatenate step texts (each already carries its own delimiter)."""
    return "".join(texts)
