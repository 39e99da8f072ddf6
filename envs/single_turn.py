"""One agent, one turn: the single-model baseline (the whole chain of thought, then the answer)."""
from __future__ import annotations

from typing import Mapping

from agents.base import Agent
from envs.base import Env, register_env


@register_env("single_turn")
class SingleTurnEnv(Env):
    """A turn cap of one: a well-formed final turn is answered, anything else ends the episode."""

    roles = ("single",)

    def __init__(self, agents: Mapping[str, Agent], *, max_turns: int = 1, max_total_tokens: int = 8192):
        super().__init__(agents, max_turns=1, max_total_tokens=max_total_tokens)

    def first_role(self) -> str:
        return "single"
