"""The reward-term contract: ``RewardContext``, ``register_reward`` and ``score_group``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from agents.base import Agent
from longshort.config import RewardsConfig, SkipRewardsConfig
from longshort.episode import Episode
from longshort.registry import REWARDS

RewardTerm = Callable[[list[Episode], str, "RewardContext"], list[float]]


@dataclass
class RewardContext:
    """What terms may read besides the episodes: the agents and the recipe's reward settings."""

    agents: Mapping[str, Agent]
    length_mode: str = "group_relative"  # or "linear"
    token_cost: float = 0.001
    length_gate: str = "correct"  # or "paper"
    skip: SkipRewardsConfig = field(default_factory=SkipRewardsConfig)

    @classmethod
    def from_config(cls, agents: Mapping[str, Agent], rewards: RewardsConfig) -> "RewardContext":
        return cls(agents, rewards.length_mode, rewards.token_cost, rewards.length_gate, rewards.skip)


def register_reward(name: str):
    """Decorator: make a reward term available to recipes as ``rewards.weights.<role>.<name>``."""
    return REWARDS.register(name)


def acted(episode: Episode, role: str) -> bool:
    return any(turn.role == role for turn in episode.turns)


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
