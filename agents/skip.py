"""The step-entropy agent: one model thinks, replacing the steps it can spare with ``[SKIP]``, then answers.

Its system prompt is the released GRPO script's (Li et al. 2025, ``load_and_prepare_data_for_grpo``),
verbatim; the script wrote it before the chat template's user turn, here it is the system message.
Its format check is the baseline's (``SingleAgent``): ``<think>`` closed, a ``\\boxed{}`` answer
after it. Give its model the token (``agents.<role>.model.add_tokens: ["[SKIP]"]``) so a skipped step
costs one token, and score it with the ``skip_*`` reward terms (``longshort/rewards/skip.py``);
``recipes/step_entropy_tiny.yaml`` puts it together.
"""
from __future__ import annotations

from agents.base import register_agent
from agents.single import SingleAgent

SKIP_SYSTEM_PROMPT = (
    "You are an expert AI assistant specialized in solving complex mathematical problems. Your task is to "
    "provide concise and efficient Chain-of-Thought (CoT) reasoning. For any intermediate steps that are "
    "redundant, self-evident, or can be safely omitted without losing crucial information for the final "
    "solution, you must replace them with the special token [SKIP]."
)


@register_agent("skip")
class SkipAgent(SingleAgent):
    """The single-model agent of the step-entropy method, prompted to emit ``[SKIP]``."""

    system_prompt = SKIP_SYSTEM_PROMPT
