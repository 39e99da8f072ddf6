"""Reward terms: named, weighted, logged one by one.

A term is a plain callable registered by name::

    @register_reward("my_term")
    def my_term(group: list[Episode], role: str, ctx: RewardContext) -> list[float]: ...

It receives one group (the G samples of one problem, so group-relative terms can compare them) and
the agent role it scores, and returns one value per episode. A recipe picks terms and weights per
agent (``rewards.weights.<role>.<term>: weight``); ``score_group`` writes every term into
``episode.rewards[role][term]`` and the weighted sum into ``episode.totals[role]``.

Built-in terms, by the method they come from:

- ``core``: correctness, collaboration, format and length (the Long-Short paper's terms);
- ``skip``: skip_ratio, skip_count and skip_length (the step-entropy paper's ``[SKIP]`` terms).

Token costs count only the scored agent's own tokens: a partner's verbose turns never cost you.
Correctness comes from ``longshort.verify`` (the runner grades each episode before scoring).
"""
from longshort.rewards.base import RewardContext, RewardTerm, register_reward, score_group
from longshort.rewards import core, skip  # noqa: F401  (registers the built-in terms)

__all__ = ["RewardContext", "RewardTerm", "register_reward", "score_group"]
