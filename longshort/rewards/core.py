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
    """Token cost of the agent's own tokens, ranked within the group.

    ``group_relative`` (the paper's code, Kimi-1.5 style): ``lam = 0.5 - (n - min) / (max - min)`` over
    the token counts of the group's episodes in which this agent acted (0 when all are equal, and for
    an episode it never acted in). ``linear``: ``-token_cost * n``.

    ``ctx.length_gate`` decides when shortness pays:

    - ``correct`` (default): ``lam`` (or the linear cost) in a correct episode; a wrong episode gets the
      group's lowest value of the term (-0.5, or the cost of the group's longest), however short it
      was. A correct episode ended well-formed (a format failure ends an episode unanswered), so with
      positive correctness or collaboration and format weights every correct episode of a group then
      out-scores every wrong one, at any length weight: the property the policy gradient needs.
    - ``paper``: the paper's code. An agent that gives answers gets ``lam`` when correct and
      ``min(0, lam)`` otherwise (``len_reward``); one that does not (the long agent) gets ``lam``
      regardless (``len_LongCoT_reward``), so at length weight 1 a wrong, shortest episode ties a
      correct, longest one, and at a higher weight it wins. ``linear`` is ungated here.

    Deviations from the paper's code, on purpose: tokens instead of characters, and the group of one
    problem instead of the whole local batch.
    """
    counts = [ep.tokens(role) for ep in group]
    if ctx.length_mode == "linear":
        values = [-ctx.token_cost * n for n in counts]
        if ctx.length_gate == "paper":
            return values
        floor = min(values, default=0.0)
        return [v if ep.outcome.correct else floor for ep, v in zip(group, values)]
    own = [n for ep, n in zip(group, counts) if acted(ep, role)]  # a silent agent is not "short"
    lams = [0.0] * len(group)
    if own and max(own) > min(own):
        low, high = min(own), max(own)
        lams = [0.5 - (n - low) / (high - low) if acted(ep, role) else 0.0 for ep, n in zip(group, counts)]
    if ctx.length_gate == "paper":
        gated = ctx.agents[role].gives_answer
        return [lam if (ep.outcome.correct or not gated) else min(0.0, lam) for ep, lam in zip(group, lams)]
    return [lam if ep.outcome.correct else -0.5 for ep, lam in zip(group, lams)]
