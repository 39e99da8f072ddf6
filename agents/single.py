"""The single-model baseline: one model writes the whole chain of thought and the answer in one turn."""
from __future__ import annotations

from agents.base import Agent, FormatResult, register_agent
from longshort.verify import extract_boxed

SINGLE_SYSTEM_PROMPT = (
    "You are a helpful assistant. Think through the problem step by step inside <think> and </think>, "
    "then give the final answer within \\boxed{}."
)


@register_agent("single")
class SingleAgent(Agent):
    """The baseline: one model writes the whole chain of thought and the answer in one turn."""

    system_prompt = SINGLE_SYSTEM_PROMPT
    gives_answer = True

    def check_format(self, text: str, finish_reason: str) -> FormatResult:
        if finish_reason == "length":
            return FormatResult(False, "invalid", "truncated")
        if "<think>" in text and "</think>" not in text:
            return FormatResult(False, "invalid", "unclosed <think>")
        boxed = extract_boxed(text.rsplit("</think>", 1)[-1])
        if boxed is None or not boxed.strip():
            return FormatResult(False, "invalid", "no \\boxed{} answer")
        return FormatResult(True, "final")
