"""Reward terms: named, weighted, logged one by one.

A term is a plain callable registered by name::

    @register_reward("my_term")
    def my_term(group: list[Episode], role: str, ctx: RewardContext) -> list[float]: ...

It receives one group (the G samples of one problem, so group-relative terms can compare them) and
the agent role it scores, and returns one value per episode. A recipe picks terms and weights per
agent (``rewards.weights.<role>.<term>: weight``); ``score_group`` writes every term into
``episode.rewards[role][term]`` and the weighted sum into ``episode.totals[role]``.

Token costs count only the scored agent's own tokens: a partner's verbose turns never cost you.
Correctness comes from ``longshort.verify`` (the runner grades each episode before scoring).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from agents.base import Agent
from longshort.episode import Episode
from longshort.registry import REWARDS

RewardTerm = Callable[[list[Episode], str, "RewardContext"], list[float]]


@dataclass
class RewardContext:
    agents: Mapping[str, Agent]
    length_mode: str = "group_relative"  # or "linear"
    token_cost: float = 0.001


def register_reward(name: str):
    """Decorator: make a reward term available to recipes as ``rewards.weights.<role>.<name>``."""
    return REWARDS.register(name)


def _acted(episode: Episode, role: str) -> bool:
    return any(turn.role == role for turn in episode.turns)


@register_reward("correctness")
def correctness(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """1 when this agent itself gave the final answer and it verifies."""
    return [float(ep.outcome.correct and ep.outcome.answer_role == role) for ep in group]


@register_reward("collaboration")
def collaboration(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """1 when the team's final answer verifies and this agent took part: the long agent's signal,
    earned through its partner (the paper rewards the long model by the short model's answer)."""
    return [float(ep.outcome.correct and _acted(ep, role)) for ep in group]


@register_reward("format")
def format_(group: list[Episode], role: str, ctx: RewardContext) -> list[float]:
    """1 when the agent acted and every one of its turns passed its format check."""
    return [float(_acted(ep, role) and all(t.format_ok for t in ep.turns if t.role == role)) for ep in group]


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
    acted = [n for ep, n in zip(group, counts) if _acted(ep, role)]  # a silent agent is not "short"
    if not acted or max(acted) == min(acted):
        return [0.0] * len(group)
    low, high = min(acted), max(acted)
    gated = ctx.agents[role].gives_answer
    values = []
    for ep, n in zip(group, counts):
        lam = 0.5 - (n - low) / (high - low) if _acted(ep, role) else 0.0
        values.append(lam if (ep.outcome.correct or not gated) else min(0.0, lam))
    return values


def score_group(group: list[Episode], weights: Mapping[str, Mapping[str, float]], ctx: RewardContext) -> None:
    """Fill ``rewards`` and ``totals`` of every episode of one group, for every agent in ``weights``."""
    for ep in group:
        ep.rewards, ep.totals = {}, {}
    for role, terms in weights.items():
        for ep in group:
            ep.rewards[role] = {}
            ep.totals[role] = 0.0
        for name, weight in terms.items():
            values = REWARDS.get(name)(group, role, ctx)
            for ep, value in zip(group, values):
                ep.rewards[role][name] = float(value)
                ep.totals[role] += weight * float(value)
