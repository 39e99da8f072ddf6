"""The two agents of Long-Short (Ning et al. 2025): a long-thought and a short-thought agent.

The system prompts are the official repository's RL recipe prompts, verbatim (typos included, for
exact reproduction). The long agent writes ``<think> ... </think>``; the short agent writes
``<answer> ... </rethink>`` to hand back to the long agent, or ``<answer> ... \\boxed{..} </answer>``
to finish.

Format checks follow the paper's per-turn regexes with one deliberate deviation: the paper forbids
any ``<`` inside a segment (``[^<]*``), which rejects LaTeX inequalities such as ``x < 3``; here a
segment is rejected only if it contains one of the protocol's own tags.
"""
from __future__ import annotations

from agents.base import Agent, FormatResult, register_agent
from longshort.verify import extract_boxed

_SHARED = (
    "A conversation between User and two Assistants. The User asks a question, and two Assistants collaborate to "
    "solve it. The first assistant tackles the hard steps, carefully thinks about the reasoning process in the mind "
    "and then provides reasoning process. The second assistant follow provided reasoning process to complete the "
    "remaining straightforward steps to arrive at the final answer. \n\n Two assistants switch roles to solve "
    "question. The first assistant uses <think> to start its thought, and use </think> to stop thinking process. "
    "The sencond assistant user <answer> to complete remaining steps, and use </answer> to stop solving process. "
    "But if the sencond assistant finds the reasoning insufficient or encounters an error, they use </rethink> to "
    "request the fisrt assistant to generate thoughts again. \n\n The process is enclosed within "
    "'<think>...</think>', '<answer>...</rethink>' and '<answer>...</answer>' tags, respectively, e.g., <think> the "
    "first assistant's reasoning process here </think> <answer> the second assistant's answer here </rethink> "
    "<think> the first assistant's reasoning process here </think> <answer> the second assistant's final answer "
    "within \\boxed{} </answer>. \n\n "
)
LONG_SYSTEM_PROMPT = _SHARED + (
    "You are the first assistant, you return reasoning process start from <think>, and end with </think>. \n\n"
)
SHORT_SYSTEM_PROMPT = _SHARED + (
    "You are the second assistant, you return completed remaining steps: (1) start from <answer>, and end with "
    "</rethink>, or (2) start from <answer>, and output the final answer within \\boxed{}, end with </answer>. \n\n"
)

PROTOCOL_TAGS = ("<think>", "</think>", "</overthink>", "<answer>", "</answer>", "</rethink>")


def _segment(text: str, opening: str, closings: tuple[str, ...]) -> tuple[str | None, str | None, str]:
    """(body, closing tag, reason) of ``opening body closing``; body None when the shape is wrong."""
    stripped = text.strip()
    if not stripped.startswith(opening):
        return None, None, f"does not start with {opening}"
    closing = next((c for c in closings if stripped.endswith(c)), None)
    if closing is None:
        return None, None, f"does not end with {' or '.join(closings)}"
    body = stripped[len(opening): len(stripped) - len(closing)]
    if not body.strip():
        return None, closing, "empty"
    nested = next((tag for tag in PROTOCOL_TAGS if tag in body), None)
    if nested:
        return None, closing, f"contains {nested} inside the segment"
    return body, closing, "ok"


@register_agent("long")
class LongThoughtAgent(Agent):
    """Writes the important thoughts: ``<think> ... </think>``."""

    system_prompt = LONG_SYSTEM_PROMPT
    stop = ("</think>",)

    def check_format(self, text: str, finish_reason: str) -> FormatResult:
        if finish_reason == "length":
            return FormatResult(False, "invalid", "truncated")
        body, _, reason = _segment(text, "<think>", ("</think>",))
        return FormatResult(True, "think") if body is not None else FormatResult(False, "invalid", reason)


@register_agent("short")
class ShortThoughtAgent(Agent):
    """Continues concisely: hands back with ``</rethink>`` or finishes with ``\\boxed{}`` and ``</answer>``."""

    system_prompt = SHORT_SYSTEM_PROMPT
    stop = ("</answer>", "</rethink>")
    gives_answer = True

    def check_format(self, text: str, finish_reason: str) -> FormatResult:
        if finish_reason == "length":
            return FormatResult(False, "invalid", "truncated")
        body, closing, reason = _segment(text, "<answer>", ("</rethink>", "</answer>"))
        if body is None:
            return FormatResult(False, "invalid", reason)
        if closing == "</rethink>":
            return FormatResult(True, "handback")
        boxed = extract_boxed(body)
        if boxed is None or not boxed.strip():
            return FormatResult(False, "invalid", "no \\boxed{} answer")
        return FormatResult(True, "final")
