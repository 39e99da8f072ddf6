"""The Long-Short paper's reward terms: correctness, collaboration, format and token length."""
from __future__ import annotations

from longshort.episode import Episode
from longshort.rewards.base import RewardContext, acted, register_reward


@register_reward("correctness")
def correctness(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """1 when this agent itself gave the final answer and it verifies."""
    return [float(ep.outcome.correct and ep.outcome.answer_role == role) for ep in group]


@register_reward("collaboration")
def collaboration(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """1 when the team's final answer verifies and this agent took part: the long agent's signal,
    earned through its partner (the paper rewards the long model by the short model's answer)."""
    return [float(ep.outcome.correct and acted(ep, role)) for ep in group]


@register_reward("format")
def format_(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """1 when the agent acted and every one of its turns passed its format check."""
    return [float(acted(ep, role) and all(t.format_ok for t in ep.turns if t.role == role)) for ep in group]


@register_reward("length")
def length(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """Token cost of the agent's own tokens.

    ``linear``: ``-token_cost * tokens``. ``group_relative`` (the paper's code, Kimi-1.5 style):
    ``lam = 0.5 - (n - min) / (max - min)`` over the token counts of the group's episodes in which
    this agent acted (0 when all are equal, and 0 for an episode it never acted in); an agent that gives answers gets ``lam`` when the episode is correct and
    ``min(0, lam)`` otherwise, so being short never pays for a wrong answer; an agent that does not
    answer (the long agent) gets ``lam`` regardless, as the paper's ``len_LongCoT_reward`` does.
    Deviations from the paper's code, on purpose: tokens instead of characters, and the group of one
    problem instead of the whole local batch.
    """
    counts = [ep.tokens(role) for ep in group]
    if ctx.length_mode == "linear":
        return [-ctx.token_cost * n for n in counts]
    own = [n for ep, n in zip(group, counts) if acted(ep, role)]  # a silent agent is not "short"
    if not own or max(own) == min(own):
        return [0.0] * len(group)
    low, high = min(own), max(own)
    gated = ctx.agents[role].gives_answer
    values = []
    for ep, n in zip(group, counts):
        lam = 0.5 - (n - low) / (high - low) if acted(ep, role) else 0.0
        values.append(lam if (ep.outcome.correct or not gated) else min(0.0, lam))
    return values

